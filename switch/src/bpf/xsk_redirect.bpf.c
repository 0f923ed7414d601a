// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// podswitch's XDP program: one instance is attached to every port of the switch.
//
// Contract: a frame received on rx queue Q is redirected to the AF_XDP socket the switch bound
// to queue Q of this interface (the entry Q of `xsks_map`). Where no socket is bound to Q,
// bpf_redirect_map falls back to XDP_PASS: frames the switch does not own go to the kernel.
// `rx_redirected` and `rx_passed` count both outcomes per CPU, so `podswitch show ports` can
// tell frames the switch never saw from frames it dropped.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

// Index 0: frames redirected to a socket; index 1: frames passed to the kernel.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} xdp_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&xdp_counters, &idx);
	if (c)
		*c += 1;
}

SEC("xdp")
int podswitch_xsk_redirect(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	long act = bpf_redirect_map(&xsks_map, q, XDP_PASS);
	count(act == XDP_REDIRECT ? 0 : 1);
	return act;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
