//! The connection tracker's timeout flags, named and read as kube-proxy's
//! (`--conntrack-tcp-timeout-established`, `--conntrack-tcp-timeout-close-wait`,
//! `--conntrack-udp-timeout`, `--conntrack-udp-timeout-stream`).
//!
//! Contract: a value is a Go-style duration (`24h0m0s`, `90m`, `1h30m`, `30s`, `500ms`), as
//! kube-proxy's flags and its configuration file write them; `0` keeps the built-in default
//! (kube-proxy: "0 to leave as-is"), which is kube-proxy's for TCP (established 24 h, half-closed
//! 1 h) and Linux's for UDP (unanswered 30 s, answered 120 s). A value that does not parse, or
//! is not a whole number of milliseconds between 1 ms and 24 days, is refused at start with
//! the flag named: the tracker keeps idle times in 32-bit milliseconds.
use std::time::Duration;

use clap::Args;
use switch::conntrack::Timeouts;

/// The longest timeout the tracker can keep (idle times are compared as signed 32-bit ms).
const MAX: Duration = Duration::from_secs(24 * 86_400);

#[derive(Debug, Clone, Args)]
pub struct ConntrackTimeoutArgs {
    /// Idle timeout of established TCP connections (kube-proxy's flag; 0: 24h).
    #[arg(long, value_name = "DURATION", default_value = "24h0m0s", value_parser = parse_timeout)]
    pub conntrack_tcp_timeout_established: Duration,
    /// Idle timeout of half-closed TCP connections (one side sent FIN, the other may still
    /// send: CLOSE_WAIT) (kube-proxy's flag; 0: 1h).
    #[arg(long, value_name = "DURATION", default_value = "1h0m0s", value_parser = parse_timeout)]
    pub conntrack_tcp_timeout_close_wait: Duration,
    /// Idle timeout of UDP flows not answered yet (kube-proxy's flag; 0: 30s).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_timeout)]
    pub conntrack_udp_timeout: Duration,
    /// Idle timeout of answered UDP flows (kube-proxy's flag; 0: 120s).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_timeout)]
    pub conntrack_udp_timeout_stream: Duration,
}

impl ConntrackTimeoutArgs {
    /// The tracker's timeouts: the built-in ones, with every non-zero flag in place of its own.
    pub fn timeouts(&self) -> Timeouts {
        let ms = |d: Duration, default: u32| if d.is_zero() { default } else { d.as_millis() as u32 };
        let t = Timeouts::default();
        Timeouts {
            tcp_established: ms(self.conntrack_tcp_timeout_established, t.tcp_established),
            tcp_close_wait: ms(self.conntrack_tcp_timeout_close_wait, t.tcp_close_wait),
            udp_unreplied: ms(self.conntrack_udp_timeout, t.udp_unreplied),
            udp_replied: ms(self.conntrack_udp_timeout_stream, t.udp_replied),
            ..t
        }
    }
}

/// A Go-style duration of whole milliseconds, 0 or between 1 ms and 24 days.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 24h0m0s, 90m or 30s ({e})"))?;
    if d > MAX {
        return Err(format!("{s:?} is longer than the tracker's limit of 24 days"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{s:?} is not a whole number of milliseconds"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        t: ConntrackTimeoutArgs,
    }

    fn parse(args: &[&str]) -> Result<Timeouts, String> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.t.timeouts()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_kube_proxys_and_linuxs() {
        let t = parse(&[]).unwrap();
        assert_eq!(t.tcp_established, 86_400_000);
        assert_eq!(t.tcp_close_wait, 3_600_000);
        assert_eq!(t.udp_unreplied, 30_000);
        assert_eq!(t.udp_replied, 120_000);
    }

    #[test]
    fn go_durations_as_kube_proxy_writes_them_and_zero_keeps_the_default() {
        let t = parse(&[
            "--conntrack-tcp-timeout-established=2h30m0s",
            "--conntrack-tcp-timeout-close-wait",
            "90s",
            "--conntrack-udp-timeout=500ms",
            "--conntrack-udp-timeout-stream=5m",
        ])
        .unwrap();
        assert_eq!(t.tcp_established, 9_000_000);
        assert_eq!(t.tcp_close_wait, 90_000);
        assert_eq!(t.udp_unreplied, 500);
        assert_eq!(t.udp_replied, 300_000);
        let t = parse(&["--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0s"]).unwrap();
        assert_eq!((t.tcp_established, t.tcp_close_wait), (86_400_000, 3_600_000));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (v, why) in [("soon", "not a duration"), ("25d", "24 days"), ("1500us", "whole number of milliseconds"), ("-1s", "not a duration")] {
            let e = parse(&[&format!("--conntrack-tcp-timeout-close-wait={v}")]).unwrap_err();
            assert!(e.contains("--conntrack-tcp-timeout-close-wait") && e.contains(why), "{v}: {e}");
        }
    }
}
