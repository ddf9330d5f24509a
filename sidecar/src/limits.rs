//! "Never hurt the patient": whether a capture may start, and which old captures to delete.
//! Pure decisions; the capture code measures the disk and acts on them.

use std::collections::VecDeque;
use std::path::PathBuf;

use api::{Limits, Retention};

/// Why a capture was refused (logged, and counted as `dumpwatch_captures_total{result}`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("a capture of this process is already running")]
    InProgress,
    #[error("cooldown: {remaining:.0} s left of limits.cooldown")]
    Cooldown { remaining: f64 },
    #[error("limits.maxPerHour ({max}) reached")]
    HourlyLimit { max: u32 },
    #[error("limits.maxBytes: {used} B stored + {estimate} B estimated > {max} B")]
    Budget { used: u64, estimate: u64, max: u64 },
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Self::InProgress => "busy",
            Self::Cooldown { .. } => "cooldown",
            Self::HourlyLimit { .. } => "rate_limited",
            Self::Budget { .. } => "over_budget",
        }
    }
}

/// Captures of one process: whether one is running, and how big its last heap snapshot was.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub in_progress: bool,
    /// Size of the last heap snapshot: the best estimate of the next one.
    pub last_gcdump_bytes: u64,
}

/// When the pod's captures started (wall-clock seconds since the Unix epoch), for the hourly cap
/// and the cooldown: kept per pod, not per process, so a runtime that restarts (or a sidecar that
/// does: see [`crate::state`]) does not start with a fresh `maxPerHour`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaptureLog {
    starts: VecDeque<f64>,
}

/// Starts more than this far in the future are a clock that went back: forgotten, or they would
/// hold the cooldown for as long as the jump.
const CLOCK_SLACK_SECS: f64 = 60.0;
/// More starts than any `maxPerHour` keeps (a hostile state file cannot make the log huge).
pub const MAX_LOGGED_STARTS: usize = 10_000;

impl CaptureLog {
    pub fn record(&mut self, now: f64) {
        self.starts.push_back(now);
        while self.starts.len() > MAX_LOGGED_STARTS {
            self.starts.pop_front();
        }
    }

    /// Forgets starts older than an hour, in the future, or not numbers; keeps them in order.
    pub fn prune(&mut self, now: f64) {
        self.starts.retain(|&t| t.is_finite() && now - t < 3600.0 && t - now <= CLOCK_SLACK_SECS);
        self.starts.make_contiguous().sort_by(f64::total_cmp);
        while self.starts.len() > MAX_LOGGED_STARTS {
            self.starts.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// Who asked for a capture: a trigger, or a person (on demand: `kubectl create dsnap`, a request
/// file, SIGUSR1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Trigger,
    Person,
}

/// May a capture of a process (`in_progress`: one of it is running) start at `now` (wall-clock
/// seconds), given the pod's `log`? `used` is what storage holds already, `estimate` what this
/// capture will add. The cooldown damps triggers that keep firing; a person's explicit request is
/// not held back by it, but still counts against the hourly cap, the byte budget and the
/// one-at-a-time rule, which protect the patient.
pub fn admit(
    limits: &Limits,
    in_progress: bool,
    log: &mut CaptureLog,
    now: f64,
    used: u64,
    estimate: u64,
    asker: Asker,
) -> Result<(), Refusal> {
    if in_progress {
        return Err(Refusal::InProgress);
    }
    log.prune(now);
    if let Some(&last) = log.starts.back().filter(|_| asker == Asker::Trigger) {
        let cooldown = limits.cooldown.as_secs_f64();
        if now - last < cooldown {
            return Err(Refusal::Cooldown { remaining: cooldown - (now - last) });
        }
    }
    if log.starts.len() >= limits.max_per_hour as usize {
        return Err(Refusal::HourlyLimit { max: limits.max_per_hour });
    }
    let max = limits.max_bytes.value() as u64;
    if used.saturating_add(estimate) > max {
        return Err(Refusal::Budget { used, estimate, max });
    }
    Ok(())
}

/// A stored capture, as retention sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub path: PathBuf,
    pub age_secs: f64,
}

/// Captures to delete: older than `maxAge`, and beyond the newest `maxCount`.
pub fn retention_victims(stored: &[Stored], r: &Retention) -> Vec<PathBuf> {
    let mut by_age: Vec<&Stored> = stored.iter().collect();
    by_age.sort_by(|a, b| a.age_secs.total_cmp(&b.age_secs));
    by_age
        .iter()
        .enumerate()
        .filter(|(i, s)| *i >= r.max_count as usize || s.age_secs > r.max_age.as_secs_f64())
        .map(|(_, s)| s.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{Duration, Quantity};

    fn limits() -> Limits {
        Limits {
            max_per_hour: 3,
            cooldown: Duration::from_secs(60),
            max_bytes: Quantity(1000.0),
            min_free_disk: Quantity(0.0),
        }
    }

    /// Admits and, when admitted, records the start (what the watcher does).
    fn start(l: &Limits, log: &mut CaptureLog, now: f64, asker: Asker) -> Result<(), Refusal> {
        admit(l, false, log, now, 0, 10, asker).map(|()| log.record(now))
    }

    #[test]
    fn a_person_is_not_held_back_by_the_cooldown_but_by_everything_else() {
        let l = Limits { cooldown: api::Duration::from_secs(60), max_per_hour: 2, ..Limits::default() };
        let mut log = CaptureLog::default();
        assert_eq!(start(&l, &mut log, 0.0, Asker::Trigger), Ok(()));
        assert_eq!(admit(&l, true, &mut log, 1.0, 0, 10, Asker::Person), Err(Refusal::InProgress));
        assert!(matches!(admit(&l, false, &mut log, 5.0, 0, 10, Asker::Trigger), Err(Refusal::Cooldown { .. })));
        assert_eq!(start(&l, &mut log, 5.0, Asker::Person), Ok(()));
        assert_eq!(admit(&l, false, &mut log, 10.0, 0, 10, Asker::Person), Err(Refusal::HourlyLimit { max: 2 }));
    }

    #[test]
    fn cooldown_then_hourly_cap_then_window_slides() {
        let l = limits();
        let mut log = CaptureLog::default();
        assert_eq!(start(&l, &mut log, 0.0, Asker::Trigger), Ok(()));
        assert!(
            matches!(admit(&l, false, &mut log, 30.0, 0, 10, Asker::Trigger), Err(Refusal::Cooldown { remaining }) if remaining == 30.0)
        );
        for t in [60.0, 120.0] {
            assert_eq!(start(&l, &mut log, t, Asker::Trigger), Ok(()));
        }
        assert_eq!(admit(&l, false, &mut log, 200.0, 0, 10, Asker::Trigger), Err(Refusal::HourlyLimit { max: 3 }));
        assert_eq!(admit(&l, false, &mut log, 3600.0, 0, 10, Asker::Trigger), Ok(()), "the first one left the hour");
    }

    #[test]
    fn a_clock_that_went_back_does_not_hold_captures_forever() {
        let l = limits();
        let mut log = CaptureLog::default();
        assert_eq!(start(&l, &mut log, 10_000.0, Asker::Trigger), Ok(()));
        // Within the slack the start still counts (cooldown) ...
        assert!(matches!(admit(&l, false, &mut log, 9_990.0, 0, 10, Asker::Trigger), Err(Refusal::Cooldown { .. })));
        // ... a day back it is forgotten.
        assert_eq!(admit(&l, false, &mut log, 10_000.0 - 86_400.0, 0, 10, Asker::Trigger), Ok(()));
        assert!(log.is_empty());
    }

    #[test]
    fn budget_counts_what_is_stored_plus_the_estimate() {
        let l = limits();
        let mut log = CaptureLog::default();
        assert_eq!(admit(&l, false, &mut log, 0.0, 900, 100, Asker::Trigger), Ok(()));
        assert_eq!(
            admit(&l, false, &mut log, 0.0, 900, 101, Asker::Trigger),
            Err(Refusal::Budget { used: 900, estimate: 101, max: 1000 })
        );
        assert_eq!(Refusal::Budget { used: 0, estimate: 0, max: 0 }.label(), "over_budget");
    }

    #[test]
    fn retention_keeps_the_newest_within_age() {
        let r = Retention { max_count: 2, max_age: Duration::from_secs(100) };
        let s = |p: &str, age: f64| Stored { path: p.into(), age_secs: age };
        let stored = [s("c", 30.0), s("a", 10.0), s("old", 500.0), s("b", 20.0)];
        let mut v = retention_victims(&stored, &r);
        v.sort();
        assert_eq!(v, vec![PathBuf::from("c"), PathBuf::from("old")]);
        assert!(retention_victims(&[s("x", 1.0)], &r).is_empty());
    }
}
