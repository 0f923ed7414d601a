//! A worker's doorbell: how the control side wakes a worker that sleeps in poll(2).
//!
//! Contract: an eventfd (non-blocking). The control side [`Doorbell::ring`]s it after sending a
//! command, so a sleeping worker takes the command at once instead of at the end of its idle
//! sleep (a new pod's port waited for that); the worker polls its fd with its sockets' and
//! [`Doorbell::quiet`]s it when it woke on it. A ring while the worker is busy leaves the fd
//! readable until the next idle sleep, which then returns at once: one extra round, no lost
//! command (commands are in the channel, the doorbell only wakes).
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug)]
pub struct Doorbell(EventFd);

impl Doorbell {
    pub fn new() -> nix::Result<Self> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map(Self)
    }

    /// Wakes the worker (a full counter cannot happen: the worker quiets it on every wake).
    pub fn ring(&self) {
        let _ = self.0.write(1);
    }

    /// Takes the rings so far (the fd is no longer readable).
    pub fn quiet(&self) {
        let _ = self.0.read();
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        crate::afxdp::rings::wait_readable(&mut p, 0);
        p[0].revents & libc::POLLIN != 0
    }

    #[test]
    fn a_ring_wakes_a_poll_until_quieted() {
        let d = Doorbell::new().unwrap();
        assert!(!readable(d.fd()));
        d.ring();
        d.ring();
        assert!(readable(d.fd()));
        d.quiet();
        assert!(!readable(d.fd()), "one quiet takes every ring so far");
    }
}
