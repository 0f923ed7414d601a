//! The switch's masquerade ports against the kernel's own ephemeral ports on the node address.
//!
//! Contract: the uplink's filter redirects TCP/UDP/SCTP to the node address on the masquerade
//! range ([`switch::pipeline::masquerade::PORTS`], 61000-65535) to the switch, so the kernel
//! must never pick a local port in it for its own connections, or their replies would be taken.
//! [`check`] reads `net.ipv4.ip_local_port_range` of the switch's namespace and refuses an
//! overlap with an error naming both ranges and the fix; ports the kernel never picks because
//! they are in `net.ipv4.ip_local_reserved_ports` do not count. The kernel's default
//! (32768-60999) ends just below the range. Nothing is changed in the node's sysctls: moving
//! the node's own range is the operator's call.
use std::ops::RangeInclusive;

/// Why the kernel's ephemeral range does not fit.
#[derive(Debug, thiserror::Error)]
pub enum PortRangeError {
    #[error("cannot read {path}: {error}")]
    Read { path: &'static str, error: std::io::Error },
    #[error("cannot parse {path}: {text:?}")]
    Parse { path: &'static str, text: String },
    #[error(
        "the kernel's ephemeral ports (net.ipv4.ip_local_port_range {first}-{last}) overlap the switch's masquerade ports \
         {m_first}-{m_last} ({overlap} port(s) not reserved): replies to the node's own connections from those ports would \
         be taken by the switch. Lower the kernel's range (sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\", the \
         default) or reserve the overlap (net.ipv4.ip_local_reserved_ports={m_first}-{m_last})"
    )]
    Overlap { first: u16, last: u16, m_first: u16, m_last: u16, overlap: usize },
}

const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Checks this namespace's kernel ranges against the masquerade range (see the module contract).
pub fn check() -> Result<(), PortRangeError> {
    let read = |path: &'static str| std::fs::read_to_string(path).map_err(|error| PortRangeError::Read { path, error });
    let range = read(RANGE)?;
    let reserved = read(RESERVED)?;
    let kernel = parse_range(&range).ok_or_else(|| PortRangeError::Parse { path: RANGE, text: range.clone() })?;
    let reserved = parse_reserved(&reserved).ok_or_else(|| PortRangeError::Parse { path: RESERVED, text: reserved.clone() })?;
    overlap(kernel, &reserved, switch::pipeline::masquerade::PORTS)
}

/// `"32768\t60999\n"` -> 32768..=60999.
fn parse_range(s: &str) -> Option<RangeInclusive<u16>> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let (a, b) = (it.next()?.ok()?, it.next()?.ok()?);
    Some(a..=b)
}

/// `"8080,61000-65535"` -> [8080..=8080, 61000..=65535]; empty: none.
fn parse_reserved(s: &str) -> Option<Vec<RangeInclusive<u16>>> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => Some(a.trim().parse().ok()?..=b.trim().parse().ok()?),
            None => p.trim().parse().ok().map(|a| a..=a),
        })
        .collect()
}

fn overlap(kernel: RangeInclusive<u16>, reserved: &[RangeInclusive<u16>], masq: RangeInclusive<u16>) -> Result<(), PortRangeError> {
    let first = *kernel.start().max(masq.start());
    let last = *kernel.end().min(masq.end());
    let taken = (first..=last).filter(|p| !reserved.iter().any(|r| r.contains(p))).count();
    if first <= last && taken > 0 {
        return Err(PortRangeError::Overlap {
            first: *kernel.start(),
            last: *kernel.end(),
            m_first: *masq.start(),
            m_last: *masq.end(),
            overlap: taken,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_default_range_fits_and_a_wider_one_is_refused_unless_reserved() {
        let masq = 61000..=65535;
        assert!(overlap(parse_range("32768\t60999\n").unwrap(), &[], masq.clone()).is_ok());
        let e = overlap(parse_range("1024 65535").unwrap(), &[], masq.clone()).unwrap_err().to_string();
        assert!(e.contains("ip_local_port_range 1024-65535") && e.contains("61000-65535") && e.contains("4536 port(s)"), "{e}");
        let reserved = parse_reserved("8080,61000-65535\n").unwrap();
        assert_eq!(reserved, vec![8080..=8080, 61000..=65535]);
        assert!(overlap(1024..=65535, &reserved, masq.clone()).is_ok(), "the overlap is reserved");
        assert_eq!(parse_reserved("\n").unwrap(), vec![]);
        assert!(parse_range("x").is_none());
    }
}
