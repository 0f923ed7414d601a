//! `wire::vxlan` against the kernel's own VXLAN device, across a veth pair between two network
//! namespaces made here (`psw-vx` prefix, removed on drop, also when a test fails): a frame
//! encapsulated by `Tunnel::write_outer` and sent raw from one side is decapsulated by the
//! kernel on the other and delivered to a UDP socket there; a datagram the kernel sends over its
//! VXLAN device is captured raw and read back by `vxlan::inner`. Needs root: without it each
//! test prints `SKIPPED: <test> needs root` and passes, or fails when `CI` is set.
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use switch::wire::vxlan::{self, Tunnel};
use switch::wire::MacAddr;

#[path = "../../test-support/needs_root.rs"]
mod needs_root;
use needs_root::root_or_skip;

const VNI: u32 = 0x00ab_cdef;
const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 2);
const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const B_OVERLAY_MAC: [u8; 6] = [0x0a, 0x58, 10, 250, 0, 2];

#[path = "../../test-support/veth_pair.rs"]
mod veth_pair;
use veth_pair::{sh, VethPair};

fn mac_of(ns: &str, ifname: &str) -> [u8; 6] {
    let text = sh(&["ip", "netns", "exec", ns, "cat", &format!("/sys/class/net/{ifname}/address")]);
    let v: Vec<u8> = text.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Namespace A: `eth0` 10.98.1.1/24 and the kernel's `vx0` (VNI 0xabcdef, port 8472) with
/// 10.250.0.1/24, B's overlay address as a static neighbour behind the tunnel to B. Namespace
/// B: `eth0` 10.98.1.2/24 only (the test plays B's tunnel end with raw frames).
struct Lab {
    a: String,
    b: String,
    _pair: VethPair,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pair = VethPair::new("psw-vx", tag, &format!("{A_UNDERLAY}/24"), &format!("{B_UNDERLAY}/24"));
        let lab = Lab { a: pair.a.clone(), b: pair.b.clone(), _pair: pair };
        let a = lab.a.as_str();
        let (vni, local, remote) = (VNI.to_string(), A_UNDERLAY.to_string(), B_UNDERLAY.to_string());
        sh(&["ip", "-n", a, "link", "add", "vx0", "type", "vxlan", "id", &vni, "dstport", "8472", "local", &local, "dev", "eth0", "nolearning"]);
        sh(&["ip", "-n", a, "addr", "add", &format!("{A_OVERLAY}/24"), "dev", "vx0"]);
        sh(&["ip", "-n", a, "link", "set", "vx0", "up"]);
        sh(&["ip", "netns", "exec", a, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", &remote]);
        let mac = B_OVERLAY_MAC.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        sh(&["ip", "-n", a, "neigh", "replace", &B_OVERLAY.to_string(), "lladdr", &mac, "dev", "vx0", "nud", "permanent"]);
        // The underlay neighbours too, so that nothing waits on ARP.
        let a_mac = mac_of(&lab.a, "eth0").iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        let b_mac = mac_of(&lab.b, "eth0").iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        sh(&["ip", "-n", a, "neigh", "replace", &remote, "lladdr", &b_mac, "dev", "eth0", "nud", "permanent"]);
        sh(&["ip", "-n", &lab.b, "neigh", "replace", &local, "lladdr", &a_mac, "dev", "eth0", "nud", "permanent"]);
        lab
    }

    /// Runs a Python program in `ns` (stdout captured) and returns the child.
    fn python(ns: &str, program: &str) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", program])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/test.sh installs it)")
    }
}

/// A child's stdout, line by line (read by a thread of its own).
fn lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, within a deadline; else the child's stderr in the failure.
fn next_line(lines: &std::sync::mpsc::Receiver<String>, child: &mut std::process::Child, within: Duration) -> String {
    lines.recv_timeout(within).unwrap_or_else(|_| {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("no line within {within:?}; stderr: {err}")
    })
}

#[test]
fn the_kernel_decapsulates_what_write_outer_encapsulates() {
    if !root_or_skip("the_kernel_decapsulates_what_write_outer_encapsulates") {
        return;
    }
    let lab = Lab::new("dec");
    let mut listener = Lab::python(
        &lab.a,
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{A_OVERLAY}',9999))\n\
             print('ready',flush=True)\ns.settimeout(5)\nd,a=s.recvfrom(2048)\nprint(d.decode(),a[0],a[1],flush=True)"
        ),
    );
    let listened = lines(&mut listener);
    assert_eq!(next_line(&listened, &mut listener, Duration::from_secs(10)).trim(), "ready");
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2(B_OVERLAY_MAC, mac_of(&lab.a, "vx0"))
        .ipv4(B_OVERLAY.octets(), A_OVERLAY.octets(), 64)
        .udp(5000, 9999)
        .write(&mut inner, b"through the tunnel")
        .unwrap();
    let mut frame = vec![0u8; vxlan::OVERHEAD];
    frame.extend_from_slice(&inner);
    let tunnel = Tunnel {
        src_mac: MacAddr(mac_of(&lab.b, "eth0")),
        dst_mac: MacAddr(mac_of(&lab.a, "eth0")),
        src_ip: B_UNDERLAY,
        dst_ip: A_UNDERLAY,
        dst_port: vxlan::DEFAULT_PORT,
        vni: VNI,
    };
    tunnel.write_outer(&mut frame, vxlan::source_port(0x1234_5678_9abc_def0)).unwrap();
    let path = std::env::temp_dir().join(format!("psw-vx{}-frame", std::process::id()));
    std::fs::write(&path, &frame).unwrap();
    let mut sender = Lab::python(
        &lab.b,
        &format!(
            "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth0',0))\n\
             s.send(open('{}','rb').read())",
            path.display()
        ),
    );
    assert!(sender.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
    let got = next_line(&listened, &mut listener, Duration::from_secs(10));
    assert_eq!(got.trim(), format!("through the tunnel {B_OVERLAY} 5000"));
}

#[test]
fn inner_reads_what_the_kernel_encapsulates() {
    if !root_or_skip("inner_reads_what_the_kernel_encapsulates") {
        return;
    }
    let lab = Lab::new("enc");
    // B captures the first VXLAN frame on its eth0 and prints it as hex.
    let mut capture = Lab::python(&lab.b, CAPTURE_VXLAN);
    let captured = lines(&mut capture);
    assert_eq!(next_line(&captured, &mut capture, Duration::from_secs(10)).trim(), "ready");
    let mut send = Lab::python(
        &lab.a,
        &format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto(b'from the kernel',('{B_OVERLAY}',7777))"),
    );
    assert!(send.wait().unwrap().success());
    let hex = next_line(&captured, &mut capture, Duration::from_secs(10));
    let frame: Vec<u8> = (0..hex.trim().len()).step_by(2).map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap()).collect();
    let (vni, at) = vxlan::inner(&frame, 42).expect("a VXLAN frame");
    assert_eq!(vni, VNI);
    let p = etherparse::SlicedPacket::from_ethernet(&frame[at..]).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("inner IPv4") };
    assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (A_OVERLAY, B_OVERLAY));
    let Some(etherparse::TransportSlice::Udp(u)) = p.transport else { panic!("inner UDP") };
    assert_eq!((u.destination_port(), u.payload()), (7777, &b"from the kernel"[..]));
}

/// Prints `ready`, then the first frame to UDP port 8472 seen on eth0 (as hex), within 5 s.
const CAPTURE_VXLAN: &str = r#"
import select, socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
print("ready", flush=True)
end = time.time() + 5
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.5)
    if not r:
        continue
    f = s.recv(4096)
    if len(f) > 42 and f[23] == 17 and f[36:38] == (8472).to_bytes(2, "big"):
        print(f.hex(), flush=True)
        break
"#;
