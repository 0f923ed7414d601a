//! The interleaved rounds of a benchmark: every round runs each contender (a case, a
//! generator) once, in an order the benchmark chooses per round, with the same progress lines
//! for every benchmark:
//!
//! - `round R/N NAME: running` before a measurement,
//! - `round R/N NAME: P pps (offered O pps, NOTE)` after one,
//! - `round R/N NAME: FAILED: ERROR` for a failed one (the rounds go on),
//! - `interrupted; cleaning up` when a measurement ends by SIGINT/SIGTERM (the rounds stop).
use anyhow::Result;

use crate::stats::thousands;
use crate::sys;

use super::cleanup::Cleanup;
use super::progress;

/// How many rounds and how long each measurement is: the options every round-based benchmark
/// takes (`--rounds`, `--duration`, `--warmup`).
#[derive(Debug, clap::Args)]
pub struct Window {
    /// Rounds; every round measures each case (or generator) once, interleaved.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Measurement window per case (or generator) and round, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Traffic before the window opens (not counted), seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

/// What is compared in a round.
pub trait Contender: Copy {
    fn name(self) -> &'static str;
}

/// What a progress line says of one measurement.
pub trait Measured {
    /// Frames per second received and offered.
    fn rates(&self) -> (u64, u64);
    /// What follows the offered rate in the progress line (`, ...`), or nothing.
    fn note(&self) -> String;
}

/// The contenders' names, `a, b, c` (the progress line that opens a run).
pub fn names<K: Contender>(ks: &[K]) -> String {
    ks.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// What the rounds gave.
pub struct Rounds<K, S> {
    pub samples: Vec<S>,
    /// Failed measurements: round, contender, the error with its causes.
    pub failures: Vec<(u32, K, String)>,
    /// The rounds stopped on SIGINT/SIGTERM.
    pub interrupted: bool,
}

/// Runs `rounds` rounds of `order(round)`, measuring each with `measure(contender, round)`.
pub fn run<K: Contender, S: Measured>(
    bench: &str,
    rounds: u32,
    order: impl Fn(u32) -> Vec<K>,
    mut measure: impl FnMut(K, u32) -> Result<S>,
) -> Rounds<K, S> {
    let mut out = Rounds { samples: Vec::new(), failures: Vec::new(), interrupted: false };
    'rounds: for round in 1..=rounds {
        for k in order(round) {
            progress::say(bench, format!("round {round}/{rounds} {}: running", k.name()));
            match measure(k, round) {
                Ok(s) => {
                    let (pps, offered) = s.rates();
                    progress::say(
                        bench,
                        format!("round {round}/{rounds} {}: {} pps (offered {} pps{})", k.name(), thousands(pps), thousands(offered), s.note()),
                    );
                    out.samples.push(s);
                }
                Err(e) if e.is::<sys::Interrupted>() || sys::interrupted() => {
                    progress::say(bench, "interrupted; cleaning up");
                    out.interrupted = true;
                    break 'rounds;
                }
                Err(e) => {
                    progress::say(bench, format!("round {round}/{rounds} {}: FAILED: {e:#}", k.name()));
                    out.failures.push((round, k, format!("{e:#}")));
                }
            }
        }
    }
    out
}

/// What [`rotated`] gave: every turn's sample, in the order they ran.
pub struct Rotated<S> {
    pub samples: Vec<S>,
    /// The rounds stopped on SIGINT/SIGTERM (the caller cleans up and exits 130).
    pub interrupted: bool,
}

/// The rounds of the benchmarks whose turns set a whole setup up and down (crossnode, cni,
/// apps): `rounds` rounds over `setups`, the order rotating by one each round (round 1 in the
/// given order), `turn(setup, round, notes)` for each. A failed turn is said (`round R/N NAME:
/// FAILED: ERROR`) and noted (`round R NAME: ERROR`) and the rounds go on; an interrupted one
/// (SIGINT/SIGTERM) stops them.
pub fn rotated<K: Contender, S>(
    bench: &str,
    rounds: u32,
    setups: &[K],
    notes: &mut Vec<String>,
    mut turn: impl FnMut(K, u32, &mut Vec<String>) -> Result<S>,
) -> Rotated<S> {
    let mut out = Rotated { samples: Vec::new(), interrupted: false };
    'rounds: for round in 1..=rounds {
        let mut order = setups.to_vec();
        let n = order.len().max(1);
        order.rotate_left((round as usize - 1) % n);
        for setup in order {
            match turn(setup, round, notes) {
                Ok(s) => out.samples.push(s),
                Err(e) if e.is::<sys::Interrupted>() || sys::interrupted() => {
                    out.interrupted = true;
                    break 'rounds;
                }
                Err(e) => {
                    progress::say_timed(bench, format!("round {round}/{rounds} {}: FAILED: {e:#}", setup.name()));
                    notes.push(format!("round {round} {}: {e:#}", setup.name()));
                }
            }
        }
    }
    out
}

impl<S> Rotated<S> {
    /// Takes the run down (drops `guard`); when the rounds were interrupted, says so
    /// (`interrupted; cleaned up`) and gives the run's exit status, 130.
    pub fn take_down(&self, bench: &str, guard: Cleanup) -> Option<i32> {
        drop(guard);
        if !self.interrupted {
            return None;
        }
        progress::say_timed(bench, "interrupted; cleaned up");
        Some(130)
    }
}

/// One measurement of a turn failed with `e`: an interruption goes on up (the rounds stop);
/// any other error is said (`TAG: WHAT FAILED: ERROR`) and its text returned, for the turn to
/// note before it goes on.
pub fn failed(bench: &str, tag: &str, what: &str, e: anyhow::Error) -> Result<String> {
    if e.is::<sys::Interrupted>() || sys::interrupted() {
        return Err(e);
    }
    progress::say_timed(bench, format!("{tag}: {what} FAILED: {e:#}"));
    Ok(format!("{e:#}"))
}

/// A failed measurement as the reports show it: round, contender's name, error.
pub type FailureRef<'a> = (u32, &'static str, &'a str);

/// The readable report's `ERROR round R NAME: ERROR` lines, each after an empty line.
pub fn failure_lines<'a>(failures: impl IntoIterator<Item = FailureRef<'a>>) -> String {
    failures.into_iter().map(|(round, name, error)| format!("\nERROR round {round} {name}: {error}\n")).collect()
}

/// The Markdown report's `## Errors` section (nothing without failures); an error's lines are
/// joined into one.
pub fn failure_section<'a>(failures: impl IntoIterator<Item = FailureRef<'a>>) -> String {
    let items: String =
        failures.into_iter().map(|(round, name, error)| format!("- round {round} {name}: `{}`\n", error.replace('\n', " "))).collect();
    if items.is_empty() {
        items
    } else {
        format!("\n## Errors\n\n{items}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Setup {
        A,
        B,
        C,
    }

    impl Contender for Setup {
        fn name(self) -> &'static str {
            match self {
                Setup::A => "a",
                Setup::B => "b",
                Setup::C => "c",
            }
        }
    }

    #[test]
    fn rotated_rounds_turn_the_order_and_note_failures() {
        let mut notes = Vec::new();
        let done = rotated("test", 3, &[Setup::A, Setup::B, Setup::C], &mut notes, |s, round, _| {
            if s == Setup::B && round == 2 {
                anyhow::bail!("no route")
            }
            Ok((round, s))
        });
        assert!(!done.interrupted);
        let ran: Vec<(u32, &str)> = done.samples.iter().map(|(r, s)| (*r, s.name())).collect();
        assert_eq!(ran, [(1, "a"), (1, "b"), (1, "c"), (2, "c"), (2, "a"), (3, "c"), (3, "a"), (3, "b")]);
        assert_eq!(notes, ["round 2 b: no route"]);
    }

    #[test]
    fn failures_read_as_the_reports_wrote_them() {
        let f = [(2, "switch", "no route\n  to host")];
        assert_eq!(failure_lines(f), "\nERROR round 2 switch: no route\n  to host\n");
        assert_eq!(failure_section(f), "\n## Errors\n\n- round 2 switch: `no route   to host`\n");
        assert_eq!(failure_section([]), "");
        assert_eq!(failure_lines([]), "");
    }
}
