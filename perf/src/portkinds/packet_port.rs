//! Candidate (a): an AF_PACKET socket on a veth's host end with `PACKET_VNET_HDR`, a
//! `TPACKET_V2` receive ring mapped into this process, `PACKET_QDISC_BYPASS` and
//! `PACKET_IGNORE_OUTGOING`; transmit with one `send()` per frame (vnet header + frame).
//!
//! Contract: [`PacketPort::open`] binds to an interface of the calling thread's network
//! namespace. [`PacketPort::rx_burst`] hands up to `max` received frames, each as one buffer
//! that starts with its virtio-net header (the kernel writes it just before the frame in the
//! ring slot), to a callback, and gives each slot back to the kernel after it returns; a frame
//! cut short by the slot (never at these sizes) is counted in `truncated` and skipped.
//! [`PacketPort::tx`] sends one such buffer; the kernel turns the header into the skb's GSO and
//! checksum state, so a super-frame leaves as one skb.
//!
//! Why `TPACKET_V2` and not V3: a V3 block is handed to user space only when it is full or its
//! retire timer (at least 1 ms) fires, so the small ACKs flowing back would wait up to that
//! long; V2 hands each frame over as soon as it is written. The slots are 128 KiB, so a 64 KiB
//! GSO frame always fits.
//!
//! The `unsafe` here (setsockopt/getsockopt with kernel structs, mmap/munmap of the ring, and
//! reading the ring's slots while the kernel writes others) has nix no safe wrapper for:
//! `PACKET_*` socket options and `tpacket2_hdr` are not in nix. Benchmark code: the switch
//! will get its own port module when a mechanism is chosen.
#![allow(unsafe_code)] // See the module doc: socket options and the mapped ring; each block says why it is sound.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Slot (= block) size: a 64 KiB GSO frame, its headers and the slot header fit.
const SLOT: usize = 128 * 1024;

pub struct PacketPort {
    fd: OwnedFd,
    ring: *mut u8,
    slots: usize,
    next: usize,
    /// Frames cut short by the slot size (skipped).
    pub truncated: u64,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set_int(fd: RawFd, opt: libc::c_int, v: libc::c_int, what: &str) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed; the kernel only reads it.
    let rc = unsafe { libc::setsockopt(fd, libc::SOL_PACKET, opt, (&raw const v).cast(), size_of::<libc::c_int>() as libc::socklen_t) };
    check(rc, what)
}

impl PacketPort {
    /// A port on `ifname` with `slots` receive slots of 128 KiB.
    pub fn open(ifname: &str, slots: usize) -> io::Result<PacketPort> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| io::Error::other(format!("no interface {ifname}: {e}")))?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall; the returned descriptor is owned right below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::c_int::from(proto)) };
        check(raw, "socket(AF_PACKET)")?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        // The vnet header must be set before the ring exists.
        set_int(s, libc::PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")?;
        set_int(s, libc::PACKET_VERSION, libc::tpacket_versions::TPACKET_V2 as libc::c_int, "PACKET_VERSION")?;
        set_int(s, libc::PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")?;
        set_int(s, libc::PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")?;
        let req = libc::tpacket_req { tp_block_size: SLOT as u32, tp_block_nr: slots as u32, tp_frame_size: SLOT as u32, tp_frame_nr: slots as u32 };
        // SAFETY: `req` lives across the call and its size is passed; the kernel only reads it.
        let rc = unsafe { libc::setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, (&raw const req).cast(), size_of::<libc::tpacket_req>() as libc::socklen_t) };
        check(rc, "PACKET_RX_RING")?;
        let len = SLOT * slots;
        // SAFETY: maps the ring the kernel just made for this socket, shared, at an address of the
        // kernel's choosing; the mapping is unmapped in Drop and used only within `len`.
        let ring = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_POPULATE, s, 0) };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::other(format!("mmap of the rx ring: {}", io::Error::last_os_error())));
        }
        let port = PacketPort { fd, ring: ring.cast(), slots, next: 0, truncated: 0 };
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a complete sockaddr_ll that lives across the call; its size is passed.
        let rc = unsafe { libc::bind(s, (&raw const sll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
        check(rc, "bind")?;
        Ok(port)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < slots, so the slot's first 4 bytes (tp_status, 4-aligned: slots are
        // 128 KiB apart from a page-aligned base) are inside the mapping, which lives as long as
        // `self`; the kernel and we access tp_status only atomically (the kernel with
        // smp_wmb/flush before setting TP_STATUS_USER).
        unsafe { AtomicU32::from_ptr(self.ring.add(slot * SLOT).cast()) }
    }

    /// See the module contract. Returns how many frames were handed over.
    pub fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        while n < max {
            let slot = self.next;
            if self.status(slot).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the slot is ours (TP_STATUS_USER, read with Acquire after the kernel's
            // release) until we store TP_STATUS_KERNEL; the header is at its start, in bounds.
            let hdr = unsafe { std::ptr::read(self.ring.add(slot * SLOT).cast::<libc::tpacket2_hdr>()) };
            let mac = usize::from(hdr.tp_mac);
            let snap = hdr.tp_snaplen as usize;
            if snap != hdr.tp_len as usize || mac < super::vnet::LEN || mac + snap > SLOT {
                self.truncated += 1;
            } else {
                let start = mac - super::vnet::LEN;
                // SAFETY: [start, mac + snap) lies inside this slot (checked just above), which we
                // own until it is released below; no other reference to it exists meanwhile.
                let buf = unsafe { std::slice::from_raw_parts_mut(self.ring.add(slot * SLOT + start), super::vnet::LEN + snap) };
                f(buf);
            }
            self.status(slot).store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.next = (slot + 1) % self.slots;
            n += 1;
        }
        n
    }

    /// Sends one buffer (vnet header + frame). False if the kernel refused it (counted by the caller).
    pub fn tx(&self, buf: &[u8]) -> bool {
        nix::sys::socket::send(self.fd.as_raw_fd(), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT).is_ok()
    }

    /// Frames the kernel dropped because the ring was full, since the last call
    /// (`PACKET_STATISTICS` resets on read).
    pub fn ring_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` live across the call; the kernel writes at most `len` bytes.
        let rc = unsafe { libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, (&raw mut st).cast(), &raw mut len) };
        if rc < 0 {
            0
        } else {
            u64::from(st.tp_drops)
        }
    }
}

impl Drop for PacketPort {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, with its length; no slice into it outlives the
        // `rx_burst` call that made it.
        unsafe { libc::munmap(self.ring.cast(), SLOT * self.slots) };
    }
}
