//! netsniff-ng's trafgen as the benchmarks run it: 64-byte UDP frames (60 without the FCS) from
//! one address to another, source ports cycling over `flows` values from [`FIRST_SPORT`] to
//! port 9, one worker process (`-P 1`) pinned by the caller's `taskset`.
use std::fmt::Display;
use std::path::Path;

/// Frame size without FCS (64 bytes on the wire with it).
pub const FRAME_BYTES: usize = 60;
/// The first UDP source port; flow `i` uses `FIRST_SPORT + i`.
pub const FIRST_SPORT: u32 = 1024;

/// How trafgen sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One sendto() per frame (`trafgen -t 0`): robust, frames arrive unbatched.
    Sendto,
    /// trafgen's PACKET_TX_RING (batched, non-linear skbs); may abort when frames queue up.
    Ring,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sendto => "sendto",
            Mode::Ring => "ring",
        }
    }
}

/// One direction of traffic: Ethernet and IPv4 addresses as trafgen writes them.
pub struct Frames<'a> {
    pub src_mac: &'a str,
    pub dst_mac: &'a str,
    pub src_ip: &'a dyn Display,
    pub dst_ip: &'a dyn Display,
    pub flows: u32,
}

/// The trafgen configuration for `f`; `bench` names the benchmark in its comment.
pub fn config(bench: &str, f: &Frames) -> String {
    // 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 payload = 60 bytes; 64 on the wire with the FCS.
    let payload = FRAME_BYTES - 14 - 20 - 8;
    let last = FIRST_SPORT + f.flows - 1;
    format!(
        "/* podswitch bench {bench}: 64-byte UDP frames a -> b, {} flows */\n{{\n  \
         eth(da={}, sa={}, type=0x0800),\n  \
         ipv4(sa={}, da={}, ttl=64),\n  \
         udp(sp=dinc({FIRST_SPORT}, {last}), dp=9),\n  \
         fill(0x00, {payload})\n}}\n",
        f.flows, f.dst_mac, f.src_mac, f.src_ip, f.dst_ip
    )
}

/// trafgen's arguments after the program name: send the frames of `cfg` out of `eth0`.
pub fn args(cfg: &Path, mode: Mode) -> Vec<String> {
    let mut v: Vec<String> = ["-o", "eth0", "-i"].map(String::from).to_vec();
    v.push(cfg.display().to_string());
    v.extend(["-P", "1", "--no-sock-mem"].map(String::from));
    if mode == Mode::Sendto {
        v.extend(["-t", "0"].map(String::from));
    }
    v
}

/// The frames trafgen says it sent (its `N packets outgoing` line when it stops).
pub fn parse_sent(log: &str) -> Option<u64> {
    log.lines().find_map(|l| l.trim().strip_suffix("packets outgoing").and_then(|n| n.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_parsed() {
        let log = "Cannot set ...\n\n     2593449 packets outgoing\n   155606940 bytes outgoing\n";
        assert_eq!(parse_sent(log), Some(2593449));
        assert_eq!(parse_sent("  \n   123 packets outgoing\n"), Some(123));
        assert_eq!(parse_sent("nothing"), None);
    }

    #[test]
    fn frames_are_60_bytes() {
        let ip_a: std::net::Ipv4Addr = "10.244.0.10".parse().unwrap();
        let ip_b: std::net::Ipv4Addr = "10.244.0.11".parse().unwrap();
        let f = Frames { src_mac: "0a:58:0a:f4:00:0a", dst_mac: "02:00:00:00:00:01", src_ip: &ip_a, dst_ip: &ip_b, flows: 256 };
        let cfg = config("forward", &f);
        assert!(cfg.contains("fill(0x00, 18)"));
        assert!(cfg.contains("dinc(1024, 1279)"));
        assert!(cfg.contains("sa=10.244.0.10"));
        assert!(cfg.contains("da=02:00:00:00:00:01"));
        assert!(cfg.starts_with("/* podswitch bench forward: 64-byte UDP frames a -> b, 256 flows */"));
    }

    #[test]
    fn sendto_mode_sends_one_frame_per_call() {
        let a = args(Path::new("/t/x.cfg"), Mode::Sendto);
        assert_eq!(a, ["-o", "eth0", "-i", "/t/x.cfg", "-P", "1", "--no-sock-mem", "-t", "0"]);
        assert!(!args(Path::new("/t/x.cfg"), Mode::Ring).contains(&"-t".to_string()));
    }
}
