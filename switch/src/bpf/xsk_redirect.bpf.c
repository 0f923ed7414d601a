// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// podswitch's XDP program. One instance (its maps) serves many interfaces: the switch loads one
// for all its pod ports and its host port, and one per uplink (its filter is the uplink's own).
// Attaching a program the kernel already runs elsewhere is cheap (no verification, no change of
// the kernel's XDP dispatcher and so no RCU grace period), which is what makes a new pod's port
// quick to attach.
//
// Contract: `port_slots` gives each interface the instance serves (by ifindex) its slot: the
// first of its entries in `xsks_map` (one per rx queue, `queues` of them) and its row of
// counters. A frame the switch owns, received on rx queue Q of an interface with a slot, is
// redirected to the AF_XDP socket in entry `xsk_base + Q` of `xsks_map`; where no socket is
// there, bpf_redirect_map falls back to XDP_PASS. A frame of an interface without a slot (the
// instant between attach and slot, or after) or of a queue beyond `queues` passes to the kernel.
// Which frames the switch owns depends on `filter_config.mode`, set by the switch before the
// program is attached:
// - MODE_ALL (pod ports, the host port): every frame.
// - MODE_UPLINK (the uplink, which stays the node's): only
//   (a) IPv4 to an address inside `owned_prefixes` (the pod CIDR, the Service ranges and the
//       Service addresses),
//   (b) TCP/UDP/SCTP to the node address (`node_ip`) whose destination port is in the
//       masquerade port range, is the VXLAN port (UDP), or is an entry of `owned_ports`
//       (address, protocol, port: the NodePorts),
//   (c) ICMP errors (destination unreachable, time exceeded, parameter problem) to the node
//       address about a packet the node address sent from a port (b) owns, and ICMP echo
//       replies to the node address whose identifier is in the masquerade range (pods' pings
//       leave masqueraded with such an identifier),
//   (d) ARP requests for an address of `arp_targets`;
//   everything else (the node's own traffic: its TCP/UDP, fragments to it, other ICMP, ARP for
//   the node address and every reply, IPv6, LLDP, VLAN-tagged frames...) passes to the kernel
//   untouched.
// `xdp_counters` counts per CPU, in row `counters` of the interface's slot (N_COUNTERS entries
// a row): 0 redirected, 1 passed, then which rule matched (2 owned prefix, 3 owned port, 4
// masquerade range, 5 VXLAN port, 6 ICMP error, 7 ARP), so `podswitch show ports` can tell
// frames the switch never saw from frames it dropped.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Entries of `xsks_map` (sockets over every interface of the instance) and rows of counters
// (interfaces). Kept in step with switch/src/afxdp/xdp.rs.
#define MAX_XSKS 8192
#define MAX_PORTS 1024

#define MODE_ALL 0
#define MODE_UPLINK 1

#define C_REDIRECTED 0
#define C_PASSED 1
#define C_PREFIX 2
#define C_PORT 3
#define C_MASQUERADE 4
#define C_VXLAN 5
#define C_ICMP_ERROR 6
#define C_ARP 7
#define N_COUNTERS 8

#define IPPROTO_SCTP_ 132
#define ARPOP_REQUEST_ 1

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_XSKS);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PORTS * N_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} xdp_counters SEC(".maps");

// An interface's place in the instance's maps.
struct port_slot {
	__u32 xsk_base;
	__u32 queues;
	__u32 counters;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port_slot);
} port_slots SEC(".maps");

// Entry 0. Addresses in network order, ports in host order; a zero port is no port.
struct filter_config {
	__u32 mode;
	__u32 node_ip;
	__u16 masquerade_first;
	__u16 masquerade_last;
	__u16 vxlan_port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_config);
} filter_config SEC(".maps");

// Key of `owned_prefixes`: prefix length, then the address in network order (LPM trie layout).
struct prefix_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, __u8);
} owned_prefixes SEC(".maps");

// Key of `owned_ports`: address in network order, port in host order, IP protocol number.
struct port_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct port_key);
	__type(value, __u8);
} owned_ports SEC(".maps");

// Addresses (network order) whose ARP requests the switch answers on this port.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} arp_targets SEC(".maps");

// The ARP header for IPv4 over Ethernet.
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

static __always_inline void count(__u32 row, __u32 idx)
{
	__u32 at = row * N_COUNTERS + idx;
	__u64 *c = bpf_map_lookup_elem(&xdp_counters, &at);
	if (c)
		*c += 1;
}

// Whether (node address, proto, port) is one the switch answers on: the masquerade range, the
// VXLAN port or a NodePort. Returns the counter of the rule that matched, or 0.
static __always_inline __u32 owned_node_port(const struct filter_config *cfg, __u32 addr, __u8 proto, __u16 port)
{
	if (port != 0 && port >= cfg->masquerade_first && port <= cfg->masquerade_last)
		return C_MASQUERADE;
	if (proto == IPPROTO_UDP && cfg->vxlan_port != 0 && port == cfg->vxlan_port)
		return C_VXLAN;
	struct port_key k = { .addr = addr, .port = port, .proto = proto, .pad = 0 };
	if (bpf_map_lookup_elem(&owned_ports, &k))
		return C_PORT;
	return 0;
}

// The rule under which the uplink's frame belongs to the switch, or 0: it is the kernel's.
static __always_inline __u32 uplink_owner(struct xdp_md *ctx, const struct filter_config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(eth + 1);
		if ((void *)(arp + 1) > end)
			return 0;
		if (arp->op != bpf_htons(ARPOP_REQUEST_) || arp->ptype != bpf_htons(ETH_P_IP))
			return 0;
		__u32 target;
		__builtin_memcpy(&target, arp->tpa, 4);
		return bpf_map_lookup_elem(&arp_targets, &target) ? C_ARP : 0;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return 0;
	struct prefix_key pk = { .prefixlen = 32, .addr = ip->daddr };
	if (bpf_map_lookup_elem(&owned_prefixes, &pk))
		return C_PREFIX;
	if (ip->daddr != cfg->node_ip || cfg->node_ip == 0)
		return 0;
	// Fragments to the node address are the kernel's: only it can reassemble them.
	if (ip->frag_off & bpf_htons(0x3fff))
		return 0;
	void *l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_SCTP_) {
		// Source and destination port open TCP, UDP and SCTP headers alike.
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 0;
		return owned_node_port(cfg, ip->daddr, ip->protocol, bpf_ntohs(ports[1]));
	}
	if (ip->protocol == IPPROTO_ICMP) {
		// type, code, checksum, 4 bytes, then the IPv4 header of the packet the error is about.
		__u8 *icmp = l4;
		if ((void *)(icmp + 8) > end)
			return 0;
		if (icmp[0] == 0 && icmp[1] == 0) {
			// Echo reply: type, code, checksum, identifier, sequence.
			__u16 id = ((__u16)icmp[4] << 8) | icmp[5];
			return id >= cfg->masquerade_first && id <= cfg->masquerade_last && id != 0 ? C_MASQUERADE : 0;
		}
		if (icmp[0] != 3 && icmp[0] != 11 && icmp[0] != 12)
			return 0;
		struct iphdr *inner = (void *)(icmp + 8);
		if ((void *)(inner + 1) > end || inner->ihl != 5 || inner->saddr != cfg->node_ip)
			return 0;
		if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP && inner->protocol != IPPROTO_SCTP_)
			return 0;
		__be16 *ports = (void *)(inner + 1);
		if ((void *)(ports + 2) > end)
			return 0;
		return owned_node_port(cfg, inner->saddr, inner->protocol, bpf_ntohs(ports[0])) ? C_ICMP_ERROR : 0;
	}
	return 0;
}

SEC("xdp")
int podswitch_xsk_redirect(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct port_slot *slot = bpf_map_lookup_elem(&port_slots, &ifindex);
	if (!slot)
		return XDP_PASS;
	__u32 row = slot->counters;
	__u32 zero = 0;
	struct filter_config *cfg = bpf_map_lookup_elem(&filter_config, &zero);
	if (cfg && cfg->mode == MODE_UPLINK) {
		__u32 rule = uplink_owner(ctx, cfg);
		if (rule == 0) {
			count(row, C_PASSED);
			return XDP_PASS;
		}
		count(row, rule);
	}
	__u32 q = ctx->rx_queue_index;
	if (q >= slot->queues) {
		count(row, C_PASSED);
		return XDP_PASS;
	}
	long act = bpf_redirect_map(&xsks_map, slot->xsk_base + q, XDP_PASS);
	count(row, act == XDP_REDIRECT ? C_REDIRECTED : C_PASSED);
	return act;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
