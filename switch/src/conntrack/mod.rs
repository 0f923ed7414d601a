//! Connection tracking shared by all workers: which flows exist, their TCP/UDP/ICMP state,
//! how they are translated (Service DNAT, masquerade) and the policy verdict they carry.
//!
//! - [`key`]: the 5-tuple of one direction and its keyed hash.
//! - [`entry`]: one connection, 64 bytes, updated lock-free.
//! - [`table`]: the fixed-capacity table both directions are found in.
//! - [`tcp`]: the connection states (TCP's transitions) and the timeout of each state.
//! - [`sctp`]: SCTP association states, by the first chunk of each packet.
//! - [`state_file`]: the table kept in a file for the next process (restart, upgrade, crash).
//! - [`reaper`]: expires idle entries and flushes what the control side asks, off the workers.
pub mod entry;
pub mod key;
pub mod reaper;
pub mod table;
pub mod sctp;
pub mod state_file;
pub mod tcp;

pub use entry::{flags, Entry, EntryInit, Snapshot, StateWord};
pub use key::{FlowKey, KeyHasher};
pub use table::{ConnTable, Dir, Hit, InsertError};
pub use tcp::{CtState, Timeouts};
#[cfg(test)]
mod tests;
