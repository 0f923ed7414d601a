//! For scenario tests: a worker's counters, and the worker's way of counting a verdict, so
//! that tests assert every counter a frame moved, exactly.
use crate::conntrack::ConnTable;
use crate::counters::{DropCounters, PolicyCounters};
use crate::drop_reason::DropReason;
use crate::flowlog::FlowRing;
use crate::tables::{PortId, Tables};

use super::{process, Ctx, StageCounters, Verdict};

/// The counters a worker keeps.
pub struct Counted {
    pub drops: DropCounters,
    pub flows: FlowRing,
    pub policy: PolicyCounters,
    pub stages: StageCounters,
}

impl Counted {
    pub fn new() -> Self {
        Self { drops: DropCounters::default(), flows: FlowRing::new(64), policy: PolicyCounters::default(), stages: StageCounters::default() }
    }

    pub fn ctx<'a>(&'a self, tables: &'a Tables, ct: &'a ConnTable, now: u32) -> Ctx<'a> {
        Ctx { tables, ct, now, drops: &self.drops, flows: &self.flows, policy_counters: &self.policy, stages: &self.stages }
    }

    /// [`process`], counting a drop under its reason as the worker does.
    pub fn process(&self, ctx: &Ctx, buf: &mut [u8], len: usize, in_port: PortId) -> Verdict {
        let v = process(buf, len, in_port, ctx);
        if let Verdict::Drop(r) = v {
            self.drops.count(r);
        }
        v
    }

    /// The drop counters that are not 0.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|r| (*r, self.drops.get(*r))).filter(|(_, n)| *n != 0).collect()
    }

    /// The stage counters that are not 0.
    pub fn stages(&self) -> Vec<(&'static str, u64)> {
        self.stages.values().into_iter().filter(|(_, n)| *n != 0).collect()
    }

    /// Asserts that exactly these drop and stage counters moved (by these amounts), all others
    /// staying 0 (an expected 0 is the same as leaving the counter out). Stage counters are
    /// listed in [`StageCounters::values`] order.
    #[track_caller]
    pub fn assert(&self, drops: &[(DropReason, u64)], stages: &[(&str, u64)]) {
        let drops: Vec<_> = drops.iter().copied().filter(|(_, n)| *n != 0).collect();
        let stages: Vec<_> = stages.iter().copied().filter(|(_, n)| *n != 0).collect();
        assert_eq!(self.drops(), drops, "drop counters");
        assert_eq!(self.stages(), stages, "stage counters");
    }
}
