//! The control side of the verdict log: a collector drains the workers' rings every 100 ms into
//! one bounded, sequence-numbered history that `podswitch show flows [--follow]` reads.
//!
//! Contract: the history keeps the newest [`HISTORY`] records; each record gets the next
//! sequence number, so a follower asks for "everything after N" and sees every record that was
//! not overwritten (in a worker's ring or here) before it asked.
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switch::flowlog::{Decider, FlowRecord};

use super::shared::Shared;
use crate::ctl::replies::Flow;

pub const HISTORY: usize = 20_000;

/// Starts the collector thread: every 100 ms it moves the workers' records into the history,
/// until `stop` is set.
pub(crate) fn start_collector(shared: Arc<Shared>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new().name("podswitch-flows".into()).spawn(move || {
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            shared.dp().drain_flows(&mut buf);
            shared.flows().push_all(buf.drain(..));
        }
    })?;
    Ok(())
}

#[derive(Debug, Default)]
pub struct FlowHistory {
    next_seq: u64,
    records: VecDeque<(u64, FlowRecord)>,
    /// Records lost before anyone read them (worker rings overwritten, history trimmed).
    pub lost: u64,
}

impl FlowHistory {
    pub fn push_all(&mut self, recs: impl IntoIterator<Item = FlowRecord>) {
        for r in recs {
            self.records.push_back((self.next_seq, r));
            self.next_seq += 1;
            if self.records.len() > HISTORY {
                self.records.pop_front();
                self.lost += 1;
            }
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records with sequence number >= `from`, at most `limit` of the newest.
    pub fn since(&self, from: u64, limit: usize) -> Vec<(u64, FlowRecord)> {
        let v: Vec<_> = self.records.iter().filter(|(s, _)| *s >= from).copied().collect();
        let skip = v.len().saturating_sub(limit);
        v.into_iter().skip(skip).collect()
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        1 => "icmp",
        _ => "ip",
    }
}

/// One record for `show flows`, with pod names for addresses that are pods.
pub fn render(seq: u64, r: &FlowRecord, pods: &BTreeMap<u32, String>, policies: &dyn Fn(u32) -> Option<String>) -> Flow {
    let name = |ip: u32| pods.get(&ip).cloned();
    let decided_by = match r.decider {
        Decider::NotIsolated => "not isolated (no policy selects the pods in this direction)".to_string(),
        Decider::SelfAccess => "a pod reaching itself (always allowed)".to_string(),
        Decider::Rule { policy, index, .. } => {
            format!("{} rule {index}", policies(policy).unwrap_or_else(|| format!("policy #{policy}")))
        }
        Decider::DefaultDenyEgress => "default deny (egress of the source)".to_string(),
        Decider::DefaultDenyIngress => "default deny (ingress of the destination)".to_string(),
    };
    let policy = match r.decider {
        Decider::Rule { policy, .. } => policies(policy),
        _ => None,
    };
    Flow {
        seq,
        time_ms: r.unix_ms,
        from: name(r.src),
        to: name(r.dst),
        source: format!("{}:{}", Ipv4Addr::from(r.src), r.sport),
        destination: format!("{}:{}", Ipv4Addr::from(r.orig_dst), r.orig_dport),
        translated: format!("{}:{}", Ipv4Addr::from(r.dst), r.dport),
        protocol: proto_name(r.proto).to_string(),
        verdict: if r.allowed { "allowed" } else { "denied" }.to_string(),
        rejudged: r.rejudged,
        policy,
        decided_by,
    }
}
