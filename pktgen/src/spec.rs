//! The traffic description: value syntax shared by the flags and the traffic file, the file
//! format, and the resolved [`Traffic`] the generator runs.
//!
//! Contract:
//! - Every value has one syntax whether it comes from a flag or from the file (the parsers
//!   below); a file line is `KEY VALUE` or `KEY = VALUE`, KEY being the long flag name without
//!   `--`; `#` starts a comment. Flags override the file.
//! - Frame sizes are Ethernet frames on the wire, FCS included (64..=1518); the generator
//!   builds `size - 4` bytes.
//! - A flow set is the product of source addresses x source ports x destination addresses x
//!   destination ports, at most [`MAX_FLOWS`] flows (the flow id in a frame is 16 bits); flow
//!   `i` varies the source port fastest, then the source address, destination port and
//!   destination address (many clients to one address first).
//! - Parsing never panics; errors name the key and the bad value.
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Flow ids are 16 bits in the payload stamp.
pub const MAX_FLOWS: usize = 65536;
/// Frame sizes with FCS.
pub const MIN_SIZE: u32 = 64;
pub const MAX_SIZE: u32 = 1518;
/// Random size patterns repeat after this many frames.
pub const RANDOM_PATTERN: usize = 1024;

/// Protocol of the generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP segments with SYN set (a connection-rate / SYN-flood pattern).
    TcpSyn,
    /// TCP data segments (ACK|PSH), as inside an established connection.
    Tcp,
    /// ICMP echo requests (answered by any IPv4 stack: round-trip time).
    Icmp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::TcpSyn => "tcp-syn",
            Proto::Tcp => "tcp",
            Proto::Icmp => "icmp",
        }
    }

    pub fn parse(s: &str) -> Result<Proto> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "udp" => Proto::Udp,
            "tcp-syn" | "syn" => Proto::TcpSyn,
            "tcp" | "tcp-data" => Proto::Tcp,
            "icmp" | "ping" => Proto::Icmp,
            other => bail!("unknown protocol {other:?} (udp, tcp-syn, tcp, icmp)"),
        })
    }

    pub fn has_ports(self) -> bool {
        self != Proto::Icmp
    }
}

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl IpRange {
    pub fn single(a: Ipv4Addr) -> Self {
        IpRange { first: a, last: a }
    }

    pub fn len(&self) -> usize {
        (u32::from(self.last) - u32::from(self.first)) as usize + 1
    }

    pub fn nth(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) + i as u32)
    }

    /// `A`, `A-B` or `A/prefix` (a prefix of 30 or shorter leaves out the network and
    /// broadcast addresses).
    pub fn parse(s: &str) -> Result<IpRange> {
        let s = s.trim();
        let ip = |x: &str| -> Result<Ipv4Addr> { x.trim().parse().map_err(|_| anyhow!("{x:?} is not an IPv4 address")) };
        let r = if let Some((a, b)) = s.split_once('-') {
            IpRange { first: ip(a)?, last: ip(b)? }
        } else if let Some((a, p)) = s.split_once('/') {
            let base = u32::from(ip(a)?);
            let p: u32 = p.trim().parse().map_err(|_| anyhow!("bad prefix length in {s:?}"))?;
            if p > 32 {
                bail!("bad prefix length in {s:?}");
            }
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            let net = base & mask;
            let bcast = net | !mask;
            if p <= 30 {
                IpRange { first: Ipv4Addr::from(net + 1), last: Ipv4Addr::from(bcast - 1) }
            } else {
                IpRange { first: Ipv4Addr::from(net), last: Ipv4Addr::from(bcast) }
            }
        } else {
            IpRange::single(ip(s)?)
        };
        if u32::from(r.first) > u32::from(r.last) {
            bail!("address range {s:?} runs backwards");
        }
        Ok(r)
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(p: u16) -> Self {
        PortRange { first: p, last: p }
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn nth(&self, i: usize) -> u16 {
        self.first + i as u16
    }

    /// `P` or `P-Q`.
    pub fn parse(s: &str) -> Result<PortRange> {
        let p = |x: &str| -> Result<u16> { x.trim().parse().map_err(|_| anyhow!("{x:?} is not a port (0-65535)")) };
        let r = match s.split_once('-') {
            Some((a, b)) => PortRange { first: p(a)?, last: p(b)? },
            None => PortRange::single(p(s)?),
        };
        if r.first > r.last {
            bail!("port range {s:?} runs backwards");
        }
        Ok(r)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Frame sizes: what was asked, and the repeating pattern of sizes it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// The text it was parsed from (for reports).
    pub text: String,
    /// Sizes with FCS, sent in this order, repeating.
    pub pattern: Vec<u32>,
}

impl Sizes {
    /// `64`; `64,128,256` (cycled); `64*7,594*4,1518` (weights, interleaved); `64-1518`
    /// (uniform random, a pattern of [`RANDOM_PATTERN`] drawn with `seed`); `imix`
    /// (= `64*7,594*4,1518`).
    pub fn parse(s: &str, seed: u64) -> Result<Sizes> {
        let text = s.trim().to_string();
        let body = if text.eq_ignore_ascii_case("imix") { "64*7,594*4,1518*1" } else { text.as_str() };
        let size = |x: &str| -> Result<u32> {
            let v: u32 = x.trim().parse().map_err(|_| anyhow!("{x:?} is not a frame size"))?;
            if !(MIN_SIZE..=MAX_SIZE).contains(&v) {
                bail!("frame size {v} is outside {MIN_SIZE}..={MAX_SIZE} (sizes count the FCS)");
            }
            Ok(v)
        };
        let pattern = if let Some((a, b)) = body.split_once('-') {
            let (lo, hi) = (size(a)?, size(b)?);
            if lo > hi {
                bail!("size range {body:?} runs backwards");
            }
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..RANDOM_PATTERN).map(|_| rng.u32(lo..=hi)).collect()
        } else {
            let mut weighted = Vec::new();
            for part in body.split(',') {
                let (v, w) = match part.split_once('*') {
                    Some((v, w)) => {
                        let w: u32 = w.trim().parse().map_err(|_| anyhow!("bad weight in {part:?}"))?;
                        if w == 0 || w > 1000 {
                            bail!("weight in {part:?} must be 1..=1000");
                        }
                        (size(v)?, w)
                    }
                    None => (size(part)?, 1),
                };
                weighted.push((v, w));
            }
            smooth_weighted(&weighted)
        };
        Ok(Sizes { text, pattern })
    }

    /// Mean size with FCS.
    pub fn mean(&self) -> f64 {
        self.pattern.iter().map(|&s| f64::from(s)).sum::<f64>() / self.pattern.len() as f64
    }
}

/// Smooth weighted round robin: weights 7,4,1 give an interleaved sequence of 12.
fn smooth_weighted(items: &[(u32, u32)]) -> Vec<u32> {
    let total: i64 = items.iter().map(|&(_, w)| i64::from(w)).sum();
    let mut current = vec![0i64; items.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &(_, w)) in items.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(items[best].0);
    }
    out
}

/// Sending rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the interface takes frames.
    Max,
    /// Frames per second.
    Pps(u64),
}

impl Rate {
    /// `max`, or frames per second: `250000`, `250k`, `1.5m`, `1mpps`, `100kpps`.
    pub fn parse(s: &str) -> Result<Rate> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" || t == "0" {
            return Ok(Rate::Max);
        }
        let t = t.strip_suffix("pps").unwrap_or(&t);
        let n = parse_scaled(t).with_context(|| format!("bad rate {s:?} (max, 250000, 250k, 1.5m, 1mpps)"))?;
        if n < 1.0 {
            bail!("rate {s:?} is below 1 frame/s");
        }
        Ok(Rate::Pps(n.round() as u64))
    }

    pub fn pps(self) -> Option<u64> {
        match self {
            Rate::Max => None,
            Rate::Pps(p) => Some(p),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::Pps(p) => write!(f, "{p} pps"),
        }
    }
}

/// `1000`, `10k`, `2.5m`, `1g` (decimal multiples).
pub fn parse_scaled(s: &str) -> Result<f64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1e3),
        Some('m') => (&s[..s.len() - 1], 1e6),
        Some('g') => (&s[..s.len() - 1], 1e9),
        _ => (&s[..], 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| anyhow!("{s:?} is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("{s:?} is not a non-negative number");
    }
    Ok(v * mult)
}

/// A frame count: `1000000`, `1m`, `10k`.
pub fn parse_count(s: &str) -> Result<u64> {
    let v = parse_scaled(s).with_context(|| format!("bad count {s:?}"))?;
    if v < 1.0 {
        bail!("count {s:?} must be at least 1");
    }
    Ok(v.round() as u64)
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| anyhow!("bad duration {s:?} (10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 1e7 {
        bail!("bad duration {s:?}");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// A percentage or fraction: `0.5%` or `0.005`.
pub fn parse_fraction(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| anyhow!("bad fraction {s:?} (0.5% or 0.005)"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("fraction {s:?} must be between 0 and 100%");
    }
    Ok(v)
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    switch::afxdp::iface::parse_mac(s.trim()).ok_or_else(|| anyhow!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

/// Keys a traffic file may set (the long flag names).
pub const FILE_KEYS: &[&str] = &[
    "proto", "src-mac", "dst-mac", "src-ip", "dst-ip", "src-port", "dst-port", "size", "ttl", "tos", "seed", "rate",
    "duration", "count",
];

/// The settings a traffic file or the flags give, each still optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficSettings {
    pub proto: Option<String>,
    pub src_mac: Option<String>,
    pub dst_mac: Option<String>,
    pub src_ip: Option<String>,
    pub dst_ip: Option<String>,
    pub src_port: Option<String>,
    pub dst_port: Option<String>,
    pub size: Option<String>,
    pub ttl: Option<String>,
    pub tos: Option<String>,
    pub seed: Option<String>,
    pub rate: Option<String>,
    pub duration: Option<String>,
    pub count: Option<String>,
}

impl TrafficSettings {
    /// Parses a traffic file; see the module contract.
    pub fn parse_file(text: &str) -> Result<TrafficSettings> {
        let mut s = TrafficSettings::default();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => match line.split_once(char::is_whitespace) {
                    Some((k, v)) => (k.trim(), v.trim()),
                    None => bail!("line {}: {line:?} has no value (KEY VALUE)", no + 1),
                },
            };
            let key = key.trim_start_matches("--");
            if value.is_empty() {
                bail!("line {}: {key} has no value", no + 1);
            }
            let slot = s.slot(key).ok_or_else(|| anyhow!("line {}: unknown key {key:?} (known: {})", no + 1, FILE_KEYS.join(", ")))?;
            if slot.is_some() {
                bail!("line {}: {key} given twice", no + 1);
            }
            *slot = Some(value.to_string());
        }
        Ok(s)
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "proto" => &mut self.proto,
            "src-mac" => &mut self.src_mac,
            "dst-mac" => &mut self.dst_mac,
            "src-ip" => &mut self.src_ip,
            "dst-ip" => &mut self.dst_ip,
            "src-port" => &mut self.src_port,
            "dst-port" => &mut self.dst_port,
            "size" => &mut self.size,
            "ttl" => &mut self.ttl,
            "tos" => &mut self.tos,
            "seed" => &mut self.seed,
            "rate" => &mut self.rate,
            "duration" => &mut self.duration,
            "count" => &mut self.count,
            _ => return None,
        })
    }

    /// `self` with every setting of `over` that is set replacing it (flags over the file).
    pub fn overridden_by(mut self, over: &TrafficSettings) -> TrafficSettings {
        for key in FILE_KEYS {
            let v = over.clone().slot(key).and_then(|s| s.clone());
            if let Some(v) = v {
                *self.slot(key).expect("known key") = Some(v);
            }
        }
        self
    }
}

/// Addresses pktgen found on the interface (defaults for what the settings leave out).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub src_mac: Option<[u8; 6]>,
    pub src_ip: Option<Ipv4Addr>,
}

/// The resolved traffic (what the frames look like), without the rate and length.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub proto: Proto,
    pub src_mac: [u8; 6],
    /// None: to be resolved (neighbour table) before sending.
    pub dst_mac: Option<[u8; 6]>,
    pub src_ip: IpRange,
    pub dst_ip: IpRange,
    pub src_port: PortRange,
    pub dst_port: PortRange,
    pub sizes: Sizes,
    pub ttl: u8,
    pub tos: u8,
}

/// How long and how fast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub rate: Rate,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
}

impl Traffic {
    /// Resolves the settings; `defaults` fills the source MAC and address.
    pub fn resolve(s: &TrafficSettings, defaults: &Defaults) -> Result<Traffic> {
        let proto = s.proto.as_deref().map(Proto::parse).transpose().context("proto")?.unwrap_or(Proto::Udp);
        let src_mac = match &s.src_mac {
            Some(m) => parse_mac(m).context("src-mac")?,
            None => defaults.src_mac.ok_or_else(|| anyhow!("no --src-mac and the interface's MAC is unknown"))?,
        };
        let dst_mac = s.dst_mac.as_deref().map(parse_mac).transpose().context("dst-mac")?;
        let src_ip = match &s.src_ip {
            Some(r) => IpRange::parse(r).context("src-ip")?,
            None => IpRange::single(defaults.src_ip.ok_or_else(|| {
                anyhow!("the interface has no IPv4 address: give --src-ip")
            })?),
        };
        let dst_ip = IpRange::parse(s.dst_ip.as_deref().ok_or_else(|| anyhow!("--dst-ip is required (flag or traffic file)"))?)
            .context("dst-ip")?;
        if !proto.has_ports() && (s.src_port.is_some() || s.dst_port.is_some()) {
            bail!("ICMP has no ports: drop --src-port/--dst-port (flows of ICMP differ by address and echo id)");
        }
        let src_port = s.src_port.as_deref().map(PortRange::parse).transpose().context("src-port")?.unwrap_or(PortRange::single(1024));
        let dst_port = s.dst_port.as_deref().map(PortRange::parse).transpose().context("dst-port")?.unwrap_or(PortRange::single(9));
        let seed = s.seed.as_deref().map(|x| x.trim().parse::<u64>()).transpose().map_err(|_| anyhow!("seed must be a number"))?.unwrap_or(1);
        let sizes = Sizes::parse(s.size.as_deref().unwrap_or("64"), seed).context("size")?;
        let ttl = s.ttl.as_deref().map(|x| x.trim().parse::<u8>()).transpose().map_err(|_| anyhow!("ttl must be 1..=255"))?.unwrap_or(64);
        if ttl == 0 {
            bail!("ttl must be 1..=255");
        }
        let tos = s.tos.as_deref().map(|x| x.trim().parse::<u8>()).transpose().map_err(|_| anyhow!("tos must be 0..=255"))?.unwrap_or(0);
        let t = Traffic { proto, src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, sizes, ttl, tos };
        let n = t.flow_count_unchecked();
        if n > MAX_FLOWS as u128 {
            bail!("the flow set has {n} flows; pktgen tracks at most {MAX_FLOWS} (16-bit flow id): narrow an address or port range");
        }
        Ok(t)
    }

    fn flow_count_unchecked(&self) -> u128 {
        let ports = if self.proto.has_ports() { self.src_port.len() as u128 * self.dst_port.len() as u128 } else { 1 };
        self.src_ip.len() as u128 * self.dst_ip.len() as u128 * ports
    }

    pub fn flow_count(&self) -> usize {
        self.flow_count_unchecked() as usize
    }

    /// Flow `i`: (source address, source port, destination address, destination port).
    pub fn flow(&self, i: usize) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let (sp, dp) = if self.proto.has_ports() { (self.src_port.len(), self.dst_port.len()) } else { (1, 1) };
        let mut k = i;
        let sport = k % sp;
        k /= sp;
        let sip = k % self.src_ip.len();
        k /= self.src_ip.len();
        let dport = k % dp;
        k /= dp;
        let dip = k % self.dst_ip.len();
        let (sport, dport) = if self.proto.has_ports() { (self.src_port.nth(sport), self.dst_port.nth(dport)) } else { (0, 0) };
        (self.src_ip.nth(sip), sport, self.dst_ip.nth(dip), dport)
    }
}

impl Pace {
    pub fn resolve(s: &TrafficSettings) -> Result<Pace> {
        Ok(Pace {
            rate: s.rate.as_deref().map(Rate::parse).transpose()?.unwrap_or(Rate::Max),
            duration: s.duration.as_deref().map(parse_duration).transpose()?,
            count: s.count.as_deref().map(parse_count).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = IpRange::parse("10.0.0.1-10.0.0.10").unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.nth(9), Ipv4Addr::new(10, 0, 0, 10));
        let c = IpRange::parse("10.1.2.0/24").unwrap();
        assert_eq!((c.first, c.last, c.len()), (Ipv4Addr::new(10, 1, 2, 1), Ipv4Addr::new(10, 1, 2, 254), 254));
        assert_eq!(IpRange::parse("10.1.2.7/32").unwrap().len(), 1);
        assert!(IpRange::parse("10.0.0.9-10.0.0.1").is_err());
        assert!(IpRange::parse("10.0.0/8").is_err());
        assert!(IpRange::parse("1.2.3.4/33").is_err());
        assert_eq!(PortRange::parse("1024-2047").unwrap().len(), 1024);
        assert_eq!(PortRange::parse(" 80 ").unwrap(), PortRange::single(80));
        assert!(PortRange::parse("70000").is_err());
        assert!(PortRange::parse("9-1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(Sizes::parse("64", 1).unwrap().pattern, vec![64]);
        assert_eq!(Sizes::parse("64,128", 1).unwrap().pattern, vec![64, 128]);
        let imix = Sizes::parse("imix", 1).unwrap();
        assert_eq!(imix.pattern.len(), 12);
        assert_eq!(imix.pattern.iter().filter(|&&s| s == 64).count(), 7);
        assert_eq!(imix.pattern.iter().filter(|&&s| s == 594).count(), 4);
        assert_eq!(imix.pattern.iter().filter(|&&s| s == 1518).count(), 1);
        // Interleaved, not 7 small frames in a row.
        assert!(imix.pattern.windows(4).all(|w| w.iter().any(|&s| s != 64)));
        let r = Sizes::parse("64-128", 7).unwrap();
        assert_eq!(r.pattern.len(), RANDOM_PATTERN);
        assert!(r.pattern.iter().all(|s| (64..=128).contains(s)));
        assert!(r.pattern.iter().any(|&s| s != r.pattern[0]));
        assert_eq!(r, Sizes::parse("64-128", 7).unwrap(), "seeded: the same pattern every run");
        assert!(Sizes::parse("60", 1).is_err());
        assert!(Sizes::parse("1519", 1).is_err());
        assert!(Sizes::parse("64*0", 1).is_err());
        assert!(Sizes::parse("128-64", 1).is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(Rate::parse("max").unwrap(), Rate::Max);
        assert_eq!(Rate::parse("1mpps").unwrap(), Rate::Pps(1_000_000));
        assert_eq!(Rate::parse("250k").unwrap(), Rate::Pps(250_000));
        assert_eq!(Rate::parse("1.5m").unwrap(), Rate::Pps(1_500_000));
        assert_eq!(Rate::parse("1200").unwrap(), Rate::Pps(1200));
        assert!(Rate::parse("fast").is_err());
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
        assert!((parse_fraction("0.5%").unwrap() - 0.005).abs() < 1e-12);
        assert!(parse_fraction("150%").is_err());
    }

    #[test]
    fn traffic_file_and_flags() {
        let file = "# many clients to one ClusterIP\nproto udp\nsrc-ip = 10.244.0.10-10.244.0.13\nsrc-port 1024-1279\n\
                    dst-ip 10.96.0.10   # the service\ndst-port 80\nsize imix\nrate 100k\nduration 10s\n";
        let s = TrafficSettings::parse_file(file).unwrap();
        assert_eq!(s.dst_port.as_deref(), Some("80"));
        let flags = TrafficSettings { rate: Some("max".into()), ..Default::default() };
        let s = s.overridden_by(&flags);
        assert_eq!(s.rate.as_deref(), Some("max"));
        assert_eq!(s.size.as_deref(), Some("imix"));
        let d = Defaults { src_mac: Some([2, 0, 0, 0, 0, 1]), src_ip: None };
        let t = Traffic::resolve(&s, &d).unwrap();
        assert_eq!(t.flow_count(), 4 * 256);
        assert_eq!(t.flow(0), (Ipv4Addr::new(10, 244, 0, 10), 1024, Ipv4Addr::new(10, 96, 0, 10), 80));
        assert_eq!(t.flow(1), (Ipv4Addr::new(10, 244, 0, 10), 1025, Ipv4Addr::new(10, 96, 0, 10), 80));
        assert_eq!(t.flow(256), (Ipv4Addr::new(10, 244, 0, 11), 1024, Ipv4Addr::new(10, 96, 0, 10), 80));
        assert_eq!(t.flow(1023), (Ipv4Addr::new(10, 244, 0, 13), 1279, Ipv4Addr::new(10, 96, 0, 10), 80));
        let p = Pace::resolve(&s).unwrap();
        assert_eq!(p.rate, Rate::Max);
        assert_eq!(p.duration, Some(Duration::from_secs(10)));
        assert_eq!(p.count, None);
    }

    #[test]
    fn file_errors_name_the_line() {
        let e = TrafficSettings::parse_file("proto udp\ncolour blue\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("colour"), "{e}");
        let e = TrafficSettings::parse_file("rate 1k\nrate 2k\n").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let e = TrafficSettings::parse_file("rate\n").unwrap_err().to_string();
        assert!(e.contains("no value"), "{e}");
    }

    #[test]
    fn resolve_errors() {
        let d = Defaults { src_mac: Some([2, 0, 0, 0, 0, 1]), src_ip: Some(Ipv4Addr::new(10, 0, 0, 1)) };
        let base = TrafficSettings { dst_ip: Some("10.0.0.2".into()), ..Default::default() };
        assert!(Traffic::resolve(&base, &d).is_ok());
        let no_dst = TrafficSettings::default();
        assert!(Traffic::resolve(&no_dst, &d).unwrap_err().to_string().contains("--dst-ip"));
        let icmp_ports = TrafficSettings { proto: Some("icmp".into()), dst_port: Some("80".into()), ..base.clone() };
        assert!(Traffic::resolve(&icmp_ports, &d).is_err());
        let too_many = TrafficSettings {
            src_ip: Some("10.0.0.0/16".into()),
            src_port: Some("1-100".into()),
            ..base.clone()
        };
        assert!(Traffic::resolve(&too_many, &d).unwrap_err().to_string().contains("65536"));
        let icmp = TrafficSettings { proto: Some("icmp".into()), dst_ip: Some("10.0.0.2-10.0.0.5".into()), ..Default::default() };
        let t = Traffic::resolve(&icmp, &d).unwrap();
        assert_eq!(t.flow_count(), 4);
        assert_eq!(t.flow(3), (Ipv4Addr::new(10, 0, 0, 1), 0, Ipv4Addr::new(10, 0, 0, 5), 0));
    }
}
