//! Candidate (b): a tap device per pod (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
//! vnet header size 10, `TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`), made
//! directly inside the pod's network namespace as its `eth0` (what Calico/VPP does for pod
//! interfaces); the switch holds the descriptor.
//!
//! Contract: [`TapPort::create`] makes the device in the calling thread's network namespace
//! (the device lives as long as the descriptor). [`TapPort::rx_burst`] reads up to `max`
//! frames, one `read()` each, and hands each buffer (virtio-net header + frame) to a callback;
//! [`TapPort::tx`] writes one such buffer with one `write()`: the kernel builds one skb from it
//! with the header's GSO and checksum state, so a super-frame reaches the pod as one skb.
//!
//! The `unsafe` here is the tun ioctls (nix has no wrappers for them; its `ioctl_*!` macros
//! would generate unsafe functions all the same). Benchmark code.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// A read buffer: the largest GSO frame (64 KiB) plus headers.
const BUF: usize = 65536 + 1024;

pub struct TapPort {
    file: File,
    buf: Box<[u8]>,
}

#[allow(unsafe_code)] // The tun ioctls; see the module doc and each SAFETY comment.
fn configure(fd: RawFd, name: &str) -> io::Result<()> {
    let check = |rc: libc::c_int, what: &str| -> io::Result<()> {
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    };
    // SAFETY: all-zero is a valid ifreq (a name of NULs, a zero union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::other(format!("interface name {name:?} too long")));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `ifr` is one and outlives the call.
    check(unsafe { libc::ioctl(fd, libc::TUNSETIFF, &raw mut ifr) }, "TUNSETIFF")?;
    let hdr_len: libc::c_int = super::vnet::LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer; `hdr_len` outlives the call.
    check(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &raw const hdr_len) }, "TUNSETVNETHDRSZ")?;
    let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl's integer argument (no pointer).
    check(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(offload)) }, "TUNSETOFFLOAD")?;
    Ok(())
}

impl TapPort {
    /// See the module contract.
    pub fn create(name: &str) -> io::Result<TapPort> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        configure(file.as_raw_fd(), name)?;
        Ok(TapPort { file, buf: vec![0u8; BUF].into_boxed_slice() })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// See the module contract. Returns how many frames were handed over.
    pub fn rx_burst(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        while n < max {
            match self.file.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(len) => {
                    f(&mut self.buf[..len]);
                    n += 1;
                }
            }
        }
        n
    }

    /// Writes one buffer (vnet header + frame). False if the kernel refused it.
    pub fn tx(&self, buf: &[u8]) -> bool {
        (&self.file).write(buf).is_ok_and(|n| n == buf.len())
    }
}
