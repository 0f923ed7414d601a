//! Names the switch and the lab agree on, like a CNI plugin and its node agent do.
//!
//! - A pod's host-side veth is `ps` + the first 12 hex digits of SHA-1 of `namespace.name`
//!   (Calico's scheme with another prefix): stable, unique in practice, and within the kernel's
//!   15-byte limit.
//! - A pod's MAC is `0a:58` followed by its IPv4 address (OVN-Kubernetes' scheme), so the
//!   switch knows every pod's MAC from its IP: anti-spoofing needs no learning.
//! - The node's own stack reaches the switch over the veth pair `psw-host` (stack side) and
//!   `psw-host-sw` (switch side).
//! - In `podswitch lab`, the switch of lab node NAME is reached at
//!   [`lab_node_control_socket`]`(NAME)` (`podswitch show --node NAME`); the first node's switch
//!   listens on [`DEFAULT_CONTROL_SOCKET`] and the lab links its per-node path there.
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Host-side veth name of a pod.
pub fn pod_interface(namespace: &str, name: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(namespace.as_bytes());
    h.update(b".");
    h.update(name.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(14);
    s.push_str("ps");
    for b in &h.digest().bytes()[..6] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The MAC address a pod with IPv4 address `ip` has.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The node stack's side of the host port pair.
pub const HOST_STACK_IF: &str = "psw-host";
/// The switch's side of the host port pair.
pub const HOST_SWITCH_IF: &str = "psw-host-sw";
/// The pods' default gateway, answered by the switch on every port.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Where `podswitch run` listens for `podswitch show` unless told otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/podswitch/podswitch.sock";
/// Where `podswitch lab --keep-connections` keeps its switches' connection tables
/// (`podswitch run --state-file`): /dev/shm, a memory filesystem on every Linux system (the
/// table is written per packet: on a disk filesystem page writeback stalls the workers).
pub const STATE_DIR: &str = "/dev/shm/podswitch";

/// The state file the lab gives the switch listening on `control_socket` (and that tests and
/// benchmarks remove before they start one): in [`STATE_DIR`], named after the socket's whole path (so
/// every switch on a machine, which has its own control socket, has its own table), e.g.
/// `/dev/shm/podswitch/run-podswitch-podswitch.sock.conntrack`.
pub fn conntrack_state_for(control_socket: &std::path::Path) -> PathBuf {
    let name = control_socket.to_string_lossy().trim_start_matches('/').replace('/', "-");
    PathBuf::from(STATE_DIR).join(format!("{name}.conntrack"))
}

/// Removes the files a switch leaves for its successor (the connection table's state file)
/// next to `control_socket`, and the socket itself: what a benchmark or test does before it
/// starts a switch that must begin empty.
pub fn remove_switch_files(control_socket: &std::path::Path) {
    let _ = std::fs::remove_file(control_socket);
    let _ = std::fs::remove_file(conntrack_state_for(control_socket));
}

/// The directory of the lab nodes' control sockets (see [`lab_node_control_socket`]).
pub const LAB_NODE_SOCKET_DIR: &str = "/run/podswitch/lab-nodes";

/// The control socket of the switch of `podswitch lab` node `node`: `/run/podswitch/lab-nodes/
/// NODE.sock`. For the lab's first node this path is a symbolic link to
/// [`DEFAULT_CONTROL_SOCKET`], where that switch listens (so `podswitch show` without flags
/// talks to it); the switches of the other nodes listen on it.
pub fn lab_node_control_socket(node: &str) -> PathBuf {
    PathBuf::from(LAB_NODE_SOCKET_DIR).join(format!("{node}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn interface_names_fit_and_are_stable() {
        let a = pod_interface("x", "a");
        assert_eq!(a.len(), 14);
        assert_eq!(a, pod_interface("x", "a"));
        assert_ne!(a, pod_interface("x", "b"));
        // The scheme, spelled out: `ps` + the first 12 hex digits of SHA-1("namespace.name").
        let full = sha1_smol::Sha1::from("kube-system.coredns-5d78c9869d-abcde").digest().to_string();
        assert_eq!(pod_interface("kube-system", "coredns-5d78c9869d-abcde"), format!("ps{}", &full[..12]));
        assert_eq!(mac_string(pod_mac(Ipv4Addr::new(10, 244, 0, 11))), "0a:58:0a:f4:00:0b");
    }

    #[test]
    fn state_files_are_per_socket_and_in_memory() {
        let a = conntrack_state_for(std::path::Path::new("/run/podswitch/podswitch.sock"));
        assert_eq!(a, PathBuf::from("/dev/shm/podswitch/run-podswitch-podswitch.sock.conntrack"));
        assert_ne!(a, conntrack_state_for(std::path::Path::new("/tmp/x/podswitch.sock")));
    }

    #[test]
    fn lab_node_sockets_are_per_node() {
        assert_eq!(lab_node_control_socket("node-2"), PathBuf::from("/run/podswitch/lab-nodes/node-2.sock"));
        assert_ne!(lab_node_control_socket("node-1"), lab_node_control_socket("node-2"));
    }
}
