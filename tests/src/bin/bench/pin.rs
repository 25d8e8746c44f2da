//! CPU pinning for the Envoy suites: while a run measures, every Envoy under test runs on CPU 0
//! and everything else the bench started (the load generator in this process, the upstreams, the
//! limiter, Redis, the authorizers) on the other CPUs.
//!
//! Why: Envoy's CPU time per request is the figure, and on two cores shared with the processes
//! that answer its calls it also counts what those neighbours do to it (cache and scheduler
//! pressure, preemption in the middle of a request). A variant whose call is answered by a busier
//! neighbour (the limiter and Redis, against a responder that answers at once) then looks more
//! expensive than its own work is. Pinned, each Envoy has a core of its own and the ratios compare
//! what Envoy does (docs/benchmarks.md, "Machine and method").
//!
//! `APIGUARD_BENCH_PIN=0` turns it off; on a machine with one CPU it is off.

use std::collections::HashSet;

use rustix::thread::{sched_setaffinity, CpuSet, Pid};

/// How the CPUs are split, while a [`Pinned`] lives.
pub struct Pinned {
    /// Every CPU this process could use before: restored on drop.
    all: Vec<usize>,
    envoy: Vec<u32>,
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = rustix::thread::sched_getaffinity(None) else {
        return Vec::new();
    };
    (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
}

fn cpu_set(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    set
}

/// The threads of process `pid` (`/proc/<pid>/task`).
fn threads(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Pins every thread of `pid` to `cpus`. Threads that end meanwhile are skipped.
fn pin(pid: u32, cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus);
    for tid in threads(pid) {
        let Some(tid) = Pid::from_raw(tid) else {
            continue;
        };
        match sched_setaffinity(Some(tid), &set) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                return Err(format!(
                    "cannot pin thread {tid:?} of {pid} to {cpus:?}: {e}"
                ))
            }
        }
    }
    Ok(())
}

/// This process and every process it started, children of children included.
fn family() -> Vec<u32> {
    let me = std::process::id();
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            if let Ok(stat) = p.stat() {
                if let (Ok(pid), Ok(ppid)) = (u32::try_from(stat.pid), u32::try_from(stat.ppid)) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut family = vec![me];
    let mut seen: HashSet<u32> = HashSet::from([me]);
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && seen.insert(pid) {
                family.push(pid);
            }
        }
        i += 1;
    }
    family
}

/// Pins the Envoys `envoy` to the first CPU and the rest of the bench's processes to the others,
/// until the returned guard drops. `None` when pinning is off or there is one CPU.
pub fn for_run(envoy: &[u32]) -> Result<Option<Pinned>, String> {
    if std::env::var("APIGUARD_BENCH_PIN").is_ok_and(|v| v == "0") {
        println!("CPU pinning: off (APIGUARD_BENCH_PIN=0)");
        return Ok(None);
    }
    let all = allowed_cpus();
    let Some((&first, rest)) = all.split_first() else {
        return Ok(None);
    };
    if rest.is_empty() {
        println!("CPU pinning: off (one CPU)");
        return Ok(None);
    }
    for pid in family() {
        if envoy.contains(&pid) {
            pin(pid, &[first])?;
        } else {
            pin(pid, rest)?;
        }
    }
    println!(
        "CPU pinning: Envoy under test on CPU {first}, load generator and backends on {rest:?}"
    );
    Ok(Some(Pinned {
        all,
        envoy: envoy.to_vec(),
    }))
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for pid in family().into_iter().chain(self.envoy.iter().copied()) {
            // Best effort: a process that ended needs nothing back.
            let _ = pin(pid, &self.all);
        }
    }
}
