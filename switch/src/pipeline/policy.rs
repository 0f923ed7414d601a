//! NetworkPolicy at connection setup: the verdict is judged once, on the translated
//! destination, and kept in the connection's entry with the policy epoch it was judged under.
//!
//! Contract:
//! - [`judge_new`] decides a new connection and logs the verdict; [`admit`] records an
//!   allowed verdict in the connection's entry. A denied connection is dropped without any
//!   answer (the client times out, as the conformance tests expect) and not tracked, so its
//!   retransmissions are judged again.
//! - [`check_established`] lets packets of a connection through with one comparison while the
//!   epoch is unchanged; after a policy change it judges the connection again, records the
//!   new verdict (logged as re-judged) and drops its packets from then on if it is now denied.
//!   Replies are covered by their connection's verdict and never judged on their own.
use std::net::Ipv4Addr;

use crate::conntrack::{Entry, EntryInit, Snapshot};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::flowlog::{self, Decider, FlowRecord};
use crate::tables::policy::Decision;
use crate::wire::IPPROTO_ICMP;

use super::Ctx;

/// Verdict byte values in a connection's entry.
pub const VERDICT_ALLOW: u8 = 1;
pub const VERDICT_DENY: u8 = 2;

/// What this stage did (connections allowed per policy are in
/// [`PolicyCounters`](crate::counters::PolicyCounters)).
#[derive(Debug, Default)]
pub struct Counters {
    /// Established connections judged again after a policy change.
    pub rejudged: Counter,
}

/// Packs a decision for the entry's rule word (policy id << 8 | rule index).
pub fn rule_word(d: Decision) -> u32 {
    match d {
        Decision::Allowed { policy, index, .. } => (policy << 8) | (index as u32 & 0xff),
        _ => u32::MAX,
    }
}

/// A connection as the flow log describes it: the tuple the client sent (`orig_dst`:
/// `orig_dport` as addressed) and the destination it was translated to (`dst`:`dport`).
#[derive(Clone, Copy)]
struct Flow {
    src: Ipv4Addr,
    sport: u16,
    orig_dst: u32,
    orig_dport: u16,
    dst: u32,
    dport: u16,
    proto: u8,
}

impl Flow {
    /// Records what `decider` made of this connection in the flow log.
    #[inline(always)]
    fn log(self, ctx: &Ctx, decider: Decider, allowed: bool, rejudged: bool) {
        ctx.flows.record(FlowRecord {
            unix_ms: flowlog::unix_ms(),
            src: u32::from(self.src),
            sport: self.sport,
            orig_dst: self.orig_dst,
            orig_dport: self.orig_dport,
            dst: self.dst,
            dport: self.dport,
            proto: self.proto,
            allowed,
            rejudged,
            decider,
        });
    }

    /// Logs decision `d` and counts the connection for the policy that allowed it.
    #[inline(always)]
    fn log_decision(self, ctx: &Ctx, d: Decision, rejudged: bool) {
        self.log(ctx, Decider::from(d), d.allowed(), rejudged);
        if let Decision::Allowed { policy, .. } = d {
            ctx.policy_counters.allowed_by(policy);
        }
    }
}

/// Judges a new connection from `src`:`sport` to `orig` (as addressed) translated to
/// `dst`:`dport`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn judge_new(ctx: &Ctx, src: Ipv4Addr, sport: u16, orig_dst: u32, orig_dport: u16, dst: u32, dport: u16, proto: u8) -> Decision {
    let p = &ctx.tables.policy;
    if p.pods.is_empty() {
        return Decision::NotIsolated; // no policy selects any local pod
    }
    let flow = Flow { src, sport, orig_dst, orig_dport, dst, dport, proto };
    if u32::from(src) == dst {
        // "A pod cannot block access to itself": its own Service answering it from itself.
        flow.log(ctx, Decider::SelfAccess, true, false);
        return Decision::NotIsolated;
    }
    let port = if proto == IPPROTO_ICMP { 0 } else { dport };
    let d = p.judge(src, Ipv4Addr::from(dst), proto, port);
    flow.log_decision(ctx, d, false);
    d
}

/// Records an allowed verdict of a new connection in its entry; a denied one is dropped.
#[inline(always)]
pub fn admit(init: &mut EntryInit, d: Decision, ctx: &Ctx) -> Result<(), DropReason> {
    if !d.allowed() {
        return Err(DropReason::PolicyDenied);
    }
    init.verdict = VERDICT_ALLOW;
    init.policy_epoch = ctx.tables.policy.epoch;
    init.policy_rule = rule_word(d);
    Ok(())
}

/// Whether a packet of an established connection may pass (see the module contract);
/// `verdict` is the entry's verdict byte as read with its state.
#[inline]
pub fn check_established(ctx: &Ctx, e: &Entry, snap: &Snapshot, verdict: u8) -> Result<(), DropReason> {
    let epoch = ctx.tables.policy.epoch;
    let allowed = if e.policy_epoch() == epoch { verdict != VERDICT_DENY } else { rejudge(ctx, e, snap, epoch) };
    if allowed {
        Ok(())
    } else {
        Err(DropReason::PolicyDenied)
    }
}

/// Judges an established connection again under policy `epoch` and records the verdict.
#[inline(never)]
fn rejudge(ctx: &Ctx, e: &Entry, snap: &Snapshot, epoch: u32) -> bool {
    ctx.stages.policy.rejudged.add(1);
    let (o, r) = (&snap.orig, &snap.reply);
    if o.src == r.src {
        e.set_verdict(VERDICT_ALLOW, epoch, u32::MAX);
        return true; // a pod reaching itself: never blocked
    }
    let port = if o.proto == IPPROTO_ICMP { 0 } else { r.sport };
    let d = ctx.tables.policy.judge(o.src_ip(), r.src_ip(), o.proto, port);
    e.set_verdict(if d.allowed() { VERDICT_ALLOW } else { VERDICT_DENY }, epoch, rule_word(d));
    if ctx.tables.policy.pods.is_empty() && d == Decision::NotIsolated {
        return true; // nothing to log: no policy anywhere
    }
    let flow = Flow { src: o.src_ip(), sport: o.sport, orig_dst: o.dst, orig_dport: o.dport, dst: r.src, dport: r.sport, proto: o.proto };
    flow.log_decision(ctx, d, true);
    d.allowed()
}
