//! Wall and CPU time per phase of reading and analyzing a dump (`dumpwatch analyze
//! --timings`). CPU is the whole process' (every thread), which is what a phase that runs on
//! both cores costs; on a machine shared with other work it also moves less than wall time.

use std::time::Instant;

use analysis::phases::Phases;
use serde::{Deserialize, Serialize};

/// One phase's cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// What ran.
    pub name: String,
    /// Wall-clock microseconds.
    pub wall_us: u64,
    /// CPU microseconds of the process that ran it (user + system, all threads).
    pub cpu_us: u64,
}

/// Records phases as they begin; the last one ends at [`PhaseClock::finish`].
#[derive(Debug, Default)]
pub struct PhaseClock {
    done: Vec<PhaseTime>,
    open: Option<(String, Instant, u64)>,
}

impl PhaseClock {
    /// A clock with no phase open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the open phase (if any) and opens `name`.
    pub fn start(&mut self, name: impl Into<String>) {
        self.close();
        self.open = Some((name.into(), Instant::now(), process_cpu_us()));
    }

    /// Names the open phase anew (with what was learned while it ran).
    pub fn rename(&mut self, name: impl Into<String>) {
        if let Some((open, _, _)) = &mut self.open {
            *open = name.into();
        }
    }

    /// Closes the open phase.
    pub fn close(&mut self) {
        if let Some((name, wall, cpu)) = self.open.take() {
            self.done.push(PhaseTime {
                name,
                wall_us: wall.elapsed().as_micros() as u64,
                cpu_us: process_cpu_us().saturating_sub(cpu),
            });
        }
    }

    /// Adds phases measured elsewhere (the DAC worker's), as they are.
    pub fn extend(&mut self, phases: impl IntoIterator<Item = PhaseTime>) {
        self.done.extend(phases);
    }

    /// Every phase recorded, in order.
    pub fn finish(mut self) -> Vec<PhaseTime> {
        self.close();
        self.done
    }
}

impl Phases for PhaseClock {
    fn begin(&mut self, name: &'static str) {
        self.start(name);
    }
}

/// User + system CPU microseconds of this process so far.
#[allow(unsafe_code)]
pub fn process_cpu_us() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `t`.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
    if ok { t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000 } else { 0 }
}

/// Names of the DAC worker's phases start with this: they run while the parent's "DAC
/// worker runs" phase does, so their wall time is inside that one's, their CPU time not.
pub const WORKER_PREFIX: &str = "worker: ";

/// The table `--timings` prints: one line per phase and the totals.
pub fn render(phases: &[PhaseTime]) -> String {
    let mut out = format!("{:<52} {:>8} {:>8}\n", "phase", "wall s", "CPU s");
    let seconds = |us: u64| us as f64 / 1e6;
    for p in phases {
        let indent = if p.name.starts_with(WORKER_PREFIX) { "  " } else { "" };
        let name = format!("{indent}{}", p.name);
        out.push_str(&format!("{name:<52} {:>8.3} {:>8.3}\n", seconds(p.wall_us), seconds(p.cpu_us)));
    }
    let wall = phases.iter().filter(|p| !p.name.starts_with(WORKER_PREFIX)).map(|p| p.wall_us).sum();
    let cpu = phases.iter().map(|p| p.cpu_us).sum();
    out.push_str(&format!("{:<52} {:>8.3} {:>8.3}\n", "total", seconds(wall), seconds(cpu)));
    out
}
