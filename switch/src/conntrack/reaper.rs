//! The reaper: expires idle connections and carries out flushes, on its own thread, so that
//! workers never stop for either.
//!
//! Contract: every tick (10 ms) it examines 1/100 of the table, so each entry is looked at about
//! once a second, and removes the ones idle for longer than their state's timeout. Flushes
//! (the UDP entries of removed endpoints) scan the whole table at once when asked and report
//! how many they removed.
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::table::ConnTable;
use super::tcp::{CtState, Timeouts};

const TICK: Duration = Duration::from_millis(10);
const PASSES_PER_SECOND: usize = 100;

enum Cmd {
    /// Remove UDP entries whose endpoint id is listed; answer with the count.
    FlushUdpEndpoints(Vec<u32>, Sender<usize>),
    Stop,
}

/// Removes every entry whose idle time exceeds its state's timeout in `range`.
pub fn sweep(table: &ConnTable, timeouts: &Timeouts, range: std::ops::Range<usize>, now: u32) -> usize {
    let mut expired = Vec::new();
    table.for_each_live(range, |idx, e, _| {
        if let Some(st) = e.state() {
            let timeout = e.timeout_override().unwrap_or_else(|| timeouts.of(st));
            if now.wrapping_sub(e.last_seen()) as i32 > timeout as i32 {
                expired.push(idx);
            }
        }
    });
    expired.into_iter().filter(|&i| table.remove(i)).count()
}

/// Removes the UDP entries of the given endpoints (ids sorted or not).
pub fn flush_udp_endpoints(table: &ConnTable, endpoints: &[u32]) -> usize {
    let mut doomed = Vec::new();
    table.for_each_live(0..table.capacity(), |idx, e, s| {
        if e.state().is_some_and(CtState::is_udp) && endpoints.contains(&s.endpoint) {
            doomed.push(idx);
        }
    });
    doomed.into_iter().filter(|&i| table.remove(i)).count()
}

pub struct Reaper {
    tx: Sender<Cmd>,
    join: Option<JoinHandle<()>>,
}

impl Reaper {
    pub fn start(table: Arc<ConnTable>, timeouts: Timeouts) -> Self {
        let (tx, rx) = bounded(64);
        let join = std::thread::Builder::new()
            .name("podswitch-reaper".into())
            .spawn(move || run(&table, &timeouts, rx))
            .expect("spawning the conntrack reaper");
        Self { tx, join: Some(join) }
    }

    /// Flushes the UDP entries of `endpoints` now; returns how many went.
    pub fn flush_udp_endpoints(&self, endpoints: Vec<u32>) -> usize {
        if endpoints.is_empty() {
            return 0;
        }
        let (done_tx, done_rx) = bounded(1);
        if self.tx.send(Cmd::FlushUdpEndpoints(endpoints, done_tx)).is_err() {
            return 0;
        }
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap_or(0)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn run(table: &ConnTable, timeouts: &Timeouts, rx: Receiver<Cmd>) {
    let cap = table.capacity();
    let step = cap.div_ceil(PASSES_PER_SECOND).max(1);
    let mut cursor = 0;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Cmd::FlushUdpEndpoints(eps, done)) => {
                let _ = done.send(flush_udp_endpoints(table, &eps));
            }
            Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let end = (cursor + step).min(cap);
        sweep(table, timeouts, cursor..end, table.now_ms());
        cursor = if end >= cap { 0 } else { end };
    }
}
