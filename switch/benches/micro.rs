//! Criterion micro-benchmarks of the per-packet path: one benchmark per case of
//! `switch::bench_fixtures::micro` (frame parse + checksum, LPM route, Service pick, conntrack
//! hit and insert, NetworkPolicy judge, the whole pipeline for three kinds of traffic).
//!
//! Run: `cargo bench -p podswitch-switch --bench micro [-- FILTER] [-- --quick]`.
//!
//! One criterion iteration is one packet: each sample runs bursts of 64 prepared inputs and
//! times only the measured burst (`measured_burst`), not the preparation of the next one, so
//! the reported time is per packet and the throughput (elements/s) is packets/s on one core.
//! Wall time depends on the machine and its load; `scripts/bench.sh micro` counts
//! instructions per packet of the same code under callgrind, which does not.
//!
//! Scale: that of `scripts/bench.sh pipeline` (10,000 Services x 10 endpoints, 1,000 pods,
//! 1,000,000 connections); `PODSWITCH_MICRO_CONNECTIONS=N` sets the connection count.
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switch::bench_fixtures::micro::{measured_burst, new_case, MicroCase, BURST, CASES};
use switch::bench_fixtures::Scale;

fn scale() -> Scale {
    let mut s = Scale::PIPELINE;
    if let Ok(v) = std::env::var("PODSWITCH_MICRO_CONNECTIONS") {
        s.connections = v.parse().expect("PODSWITCH_MICRO_CONNECTIONS: a number of connections");
    }
    s
}

fn micro(c: &mut Criterion) {
    let scale = scale();
    let mut group = c.benchmark_group("micro");
    group.throughput(Throughput::Elements(1));
    for &(name, _) in CASES {
        // Built on first use only, so that a filter skips the setup of other cases.
        let mut case: Option<Box<dyn MicroCase>> = None;
        group.bench_function(name, |b| {
            let case = case.get_or_insert_with(|| {
                eprintln!("micro: setting up {name}");
                new_case(name, &scale).expect("listed cases exist")
            });
            b.iter_custom(|packets| {
                let mut left = packets as usize;
                let mut timed = Duration::ZERO;
                while left > 0 {
                    let n = left.min(BURST);
                    case.prepare();
                    let t = Instant::now();
                    let ok = measured_burst(case.as_mut(), n);
                    timed += t.elapsed();
                    assert_eq!(ok, n, "micro case {name}: {ok} of {n} inputs came out as expected; the benchmark is wrong");
                    left -= n;
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, micro);
criterion_main!(benches);
