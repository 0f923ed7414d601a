//! Keeps the switch's own threads off the workers' cores.
//!
//! Contract: [`keep_off`] is called by `podswitch run` first thing, before any thread exists, so
//! that every thread made afterwards (the Kubernetes source's runtime, the metrics server, the
//! conntrack reaper, the control loop itself) inherits a CPU mask without the cores given to
//! `--cores`; each worker then pins itself to its own core. A busy-polling worker thus never
//! shares its core with control work (a full directory digest or a Service compile would
//! otherwise take its turns). When no other core is allowed, the mask stays as it was and the
//! caller says so.
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    #[error("reading the CPU mask: {0}")]
    Read(nix::Error),
    #[error("CPU {cpu}: {error}")]
    Cpu { cpu: usize, error: nix::Error },
    #[error("setting the CPU mask to {cores:?}: {error}")]
    Set { cores: Vec<usize>, error: nix::Error },
}

/// What [`keep_off`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCores {
    /// The cores the process was allowed before (the workers may take any of them).
    pub allowed: Vec<usize>,
    /// The cores the control threads keep to now; None when no other core was left (the mask
    /// is then unchanged).
    pub control: Option<Vec<usize>>,
}

/// Removes `worker_cores` from this thread's CPU mask (see the module contract).
pub fn keep_off(worker_cores: &[usize]) -> Result<ControlCores, AffinityError> {
    let me = Pid::from_raw(0);
    let current = sched_getaffinity(me).map_err(AffinityError::Read)?;
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|c| current.is_set(*c).unwrap_or(false)).collect();
    let mut left = CpuSet::new();
    let mut cores = Vec::new();
    for &cpu in &allowed {
        if !worker_cores.contains(&cpu) {
            left.set(cpu).map_err(|error| AffinityError::Cpu { cpu, error })?;
            cores.push(cpu);
        }
    }
    if cores.is_empty() {
        return Ok(ControlCores { allowed, control: None });
    }
    sched_setaffinity(me, &left).map_err(|error| AffinityError::Set { cores: cores.clone(), error })?;
    Ok(ControlCores { allowed, control: Some(cores) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_threads_leave_the_worker_cores_and_threads_inherit_it() {
        // Runs on its own thread so that the test harness's other threads keep their mask.
        std::thread::spawn(|| {
            let me = Pid::from_raw(0);
            let before = sched_getaffinity(me).unwrap();
            let allowed: Vec<usize> = (0..CpuSet::count()).filter(|c| before.is_set(*c).unwrap_or(false)).collect();
            if allowed.len() < 2 {
                eprintln!("SKIPPED (needs 2 CPUs in the mask): control_threads_leave_the_worker_cores");
                return;
            }
            let worker = allowed[allowed.len() - 1];
            let got = keep_off(&[worker]).unwrap();
            assert_eq!(got.allowed, allowed);
            let left = got.control.expect("other cores remain");
            assert!(!left.contains(&worker));
            assert_eq!(left.len(), allowed.len() - 1);
            let child = std::thread::spawn(|| sched_getaffinity(Pid::from_raw(0)).unwrap()).join().unwrap();
            assert!(!child.is_set(worker).unwrap(), "a thread made afterwards inherits the mask");
            // Every allowed core taken by workers: nothing changes.
            let all: Vec<usize> = (0..CpuSet::count()).collect();
            assert_eq!(keep_off(&all).unwrap().control, None);
        })
        .join()
        .unwrap();
    }
}
