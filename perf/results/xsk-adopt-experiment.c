// Experiment (not part of podswitch): can a second process adopt an AF_XDP socket and its
// UMEM (memfd-backed) handed over with SCM_RIGHTS, after the first process has exited?
#define _GNU_SOURCE
#include <linux/if_xdp.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdatomic.h>
#include <errno.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/if_link.h>

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#define FRAMES 64
#define CHUNK 4096
#define NDESC 64

static void die(const char *w) { perror(w); exit(1); }

static void send_fds(int sock, int a, int b) {
    char buf[CMSG_SPACE(2 * sizeof(int))]; memset(buf, 0, sizeof buf);
    char byte = 'x'; struct iovec io = { &byte, 1 };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int fds[2] = { a, b }; memcpy(CMSG_DATA(c), fds, sizeof fds);
    if (sendmsg(sock, &m, 0) < 0) die("sendmsg");
}

static void recv_fds(int sock, int *a, int *b) {
    char buf[CMSG_SPACE(2 * sizeof(int))]; char byte; struct iovec io = { &byte, 1 };
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf };
    if (recvmsg(sock, &m, 0) < 0) die("recvmsg");
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS) { fprintf(stderr, "no fds\n"); exit(1); }
    int fds[2]; memcpy(fds, CMSG_DATA(c), sizeof fds); *a = fds[0]; *b = fds[1];
}

int main(int argc, char **argv) {
    const char *ifname = argc > 1 ? argv[1] : "xa0";
    int sp[2]; if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp)) die("socketpair");
    pid_t old = getpid();
    pid_t kid = fork();
    if (kid > 0) {
        // The old process: UMEM on a memfd, one socket bound with TX and RX rings.
        int mfd = memfd_create("umem", 0); if (mfd < 0) die("memfd");
        if (ftruncate(mfd, FRAMES * CHUNK)) die("ftruncate");
        void *area = mmap(NULL, FRAMES * CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, mfd, 0);
        if (area == MAP_FAILED) die("mmap area");
        int xsk = socket(AF_XDP, SOCK_RAW, 0); if (xsk < 0) die("socket");
        struct xdp_umem_reg reg = { .addr = (unsigned long)area, .len = FRAMES * CHUNK, .chunk_size = CHUNK, .headroom = 0 };
        if (setsockopt(xsk, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg)) die("UMEM_REG");
        int n = NDESC;
        if (setsockopt(xsk, SOL_XDP, XDP_UMEM_FILL_RING, &n, sizeof n)) die("FILL");
        if (setsockopt(xsk, SOL_XDP, XDP_UMEM_COMPLETION_RING, &n, sizeof n)) die("COMP");
        if (setsockopt(xsk, SOL_XDP, XDP_RX_RING, &n, sizeof n)) die("RX");
        if (setsockopt(xsk, SOL_XDP, XDP_TX_RING, &n, sizeof n)) die("TX");
        struct sockaddr_xdp sa = { .sxdp_family = AF_XDP, .sxdp_ifindex = if_nametoindex(ifname), .sxdp_queue_id = 0, .sxdp_flags = XDP_COPY };
        if (bind(xsk, (struct sockaddr *)&sa, sizeof sa)) die("bind");
        // Receive too: frames 2..33 on the fill ring, the program redirects queue 0 to it.
        struct xdp_mmap_offsets o; socklen_t l = sizeof o;
        if (getsockopt(xsk, SOL_XDP, XDP_MMAP_OFFSETS, &o, &l)) die("offsets");
        char *fq = mmap(NULL, o.fr.desc + NDESC * sizeof(__u64), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, xsk, XDP_UMEM_PGOFF_FILL_RING);
        if (fq == MAP_FAILED) die("mmap fq");
        __u64 *fa = (__u64 *)(fq + o.fr.desc);
        for (int i = 0; i < 32; i++) fa[i] = (__u64)(2 + i) * CHUNK;
        atomic_store_explicit((_Atomic __u32 *)(fq + o.fr.producer), 32, memory_order_release);
        struct bpf_object *obj = bpf_object__open_file("redirect.bpf.o", NULL);
        if (!obj || bpf_object__load(obj)) die("bpf load");
        int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "redirect"));
        int map = bpf_map__fd(bpf_object__find_map_by_name(obj, "xsks"));
        __u32 key = 0, val = xsk;
        if (bpf_map_update_elem(map, &key, &val, 0)) die("xskmap");
        if (bpf_xdp_attach(if_nametoindex(ifname), prog, XDP_FLAGS_DRV_MODE, NULL)) die("xdp attach");
        // It writes a marker into frame 1 before it goes: the new process must see it.
        strcpy((char *)area + CHUNK, "written by the old process");
        send_fds(sp[0], xsk, mfd);
        printf("old %d: bound %s q0, handed over xsk fd and memfd, exiting\n", old, ifname);
        return 0; // exits: its mappings go, the fds stay open in the new process
    }
    // The new process: waits until the old one is gone, then adopts.
    int xsk, mfd; recv_fds(sp[1], &xsk, &mfd);
    while (getppid() == old) usleep(1000);
    char *area = mmap(NULL, FRAMES * CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (area == MAP_FAILED) die("mmap memfd");
    printf("new %d: old gone; frame 1 says: \"%s\"\n", getpid(), area + CHUNK);
    // A frame is sent to the interface while no process maps anything: it waits in the rings.
    sleep(2);
    struct xdp_mmap_offsets off; socklen_t ol = sizeof off;
    if (getsockopt(xsk, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol)) die("MMAP_OFFSETS");
    size_t txlen = off.tx.desc + NDESC * sizeof(struct xdp_desc);
    char *tx = mmap(NULL, txlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, xsk, XDP_PGOFF_TX_RING);
    if (tx == MAP_FAILED) die("mmap tx");
    size_t cqlen = off.cr.desc + NDESC * sizeof(__u64);
    char *cq = mmap(NULL, cqlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, xsk, XDP_UMEM_PGOFF_COMPLETION_RING);
    if (cq == MAP_FAILED) die("mmap cq");
    _Atomic __u32 *txprod = (void *)(tx + off.tx.producer);
    _Atomic __u32 *cqprod = (void *)(cq + off.cr.producer);
    _Atomic __u32 *cqcons = (void *)(cq + off.cr.consumer);
    size_t rxlen = off.rx.desc + NDESC * sizeof(struct xdp_desc);
    char *rx = mmap(NULL, rxlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, xsk, XDP_PGOFF_RX_RING);
    if (rx == MAP_FAILED) die("mmap rx");
    __u32 rp = atomic_load_explicit((_Atomic __u32 *)(rx + off.rx.producer), memory_order_acquire);
    __u32 rc = atomic_load((_Atomic __u32 *)(rx + off.rx.consumer));
    printf("new: adopted rx ring: producer %u consumer %u\n", rp, rc);
    for (__u32 i = rc; i != rp; i++) {
        struct xdp_desc *rd = (struct xdp_desc *)(rx + off.rx.desc) + (i & (NDESC - 1));
        printf("new: received %u bytes at addr %llu: \"%.26s\"\n", rd->len, (unsigned long long)rd->addr, area + rd->addr + 14);
    }
    atomic_store((_Atomic __u32 *)(rx + off.rx.consumer), rp);
    __u32 p = atomic_load(txprod), cp0 = atomic_load(cqprod);
    printf("new: adopted rings: tx producer %u, completion producer %u consumer %u\n", p, cp0, atomic_load(cqcons));
    // A broadcast frame of the local experimental ethertype 0x88b5 from frame 0.
    unsigned char *f = (unsigned char *)area;
    memset(f, 0xff, 6); memcpy(f + 6, "\x02\x00\x00\x00\x00\x01", 6); f[12] = 0x88; f[13] = 0xb5;
    memset(f + 14, 0, 46); strcpy((char *)f + 14, "sent by the adopting process");
    struct xdp_desc *d = (struct xdp_desc *)(tx + off.tx.desc);
    d[p & (NDESC - 1)] = (struct xdp_desc){ .addr = 0, .len = 60, .options = 0 };
    atomic_store_explicit(txprod, p + 1, memory_order_release);
    if (sendto(xsk, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN && errno != EBUSY) die("sendto");
    for (int i = 0; i < 1000 && atomic_load_explicit(cqprod, memory_order_acquire) == cp0; i++) usleep(1000);
    __u32 cp = atomic_load(cqprod);
    if (cp == cp0) { printf("new: no completion\n"); return 1; }
    __u64 *ca = (__u64 *)(cq + off.cr.desc);
    printf("new: completion for addr %llu (producer %u -> %u)\n", (unsigned long long)ca[cp0 & (NDESC - 1)], cp0, cp);
    atomic_store(cqcons, cp);
    return 0;
}
