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

/// Captures of one process: when they started, and whether one is running.
#[derive(Debug, Clone, Default)]
pub struct History {
    starts: VecDeque<f64>,
    pub in_progress: bool,
    /// Size of the last heap snapshot: the best estimate of the next one.
    pub last_gcdump_bytes: u64,
}

impl History {
    pub fn record_start(&mut self, now: f64) {
        self.starts.push_back(now);
        self.in_progress = true;
    }
}

/// Who asked for a capture: a trigger, or a person (on demand: `kubectl create dsnap`, a request
/// file, SIGUSR1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Trigger,
    Person,
}

/// May a capture start at `now` (seconds, monotonic)? `used` is what storage holds already,
/// `estimate` what this capture will add. The cooldown damps triggers that keep firing; a
/// person's explicit request is not held back by it, but still counts against the hourly cap,
/// the byte budget and the one-at-a-time rule, which protect the patient.
pub fn admit(
    limits: &Limits,
    h: &mut History,
    now: f64,
    used: u64,
    estimate: u64,
    asker: Asker,
) -> Result<(), Refusal> {
    if h.in_progress {
        return Err(Refusal::InProgress);
    }
    while h.starts.front().is_some_and(|&t| now - t >= 3600.0) {
        h.starts.pop_front();
    }
    if let Some(&last) = h.starts.back().filter(|_| asker == Asker::Trigger) {
        let cooldown = limits.cooldown.as_secs_f64();
        if now - last < cooldown {
            return Err(Refusal::Cooldown { remaining: cooldown - (now - last) });
        }
    }
    if h.starts.len() >= limits.max_per_hour as usize {
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

    #[test]
    fn a_person_is_not_held_back_by_the_cooldown_but_by_everything_else() {
        let l = Limits { cooldown: api::Duration::from_secs(60), max_per_hour: 2, ..Limits::default() };
        let mut h = History::default();
        assert_eq!(admit(&l, &mut h, 0.0, 0, 10, Asker::Trigger), Ok(()));
        h.record_start(0.0);
        assert_eq!(admit(&l, &mut h, 1.0, 0, 10, Asker::Person), Err(Refusal::InProgress));
        h.in_progress = false;
        assert!(matches!(admit(&l, &mut h, 5.0, 0, 10, Asker::Trigger), Err(Refusal::Cooldown { .. })));
        assert_eq!(admit(&l, &mut h, 5.0, 0, 10, Asker::Person), Ok(()));
        h.record_start(5.0);
        h.in_progress = false;
        assert_eq!(admit(&l, &mut h, 10.0, 0, 10, Asker::Person), Err(Refusal::HourlyLimit { max: 2 }));
    }

    #[test]
    fn cooldown_then_hourly_cap_then_window_slides() {
        let l = limits();
        let mut h = History::default();
        assert_eq!(admit(&l, &mut h, 0.0, 0, 10, Asker::Trigger), Ok(()));
        h.record_start(0.0);
        assert_eq!(admit(&l, &mut h, 1.0, 0, 10, Asker::Trigger), Err(Refusal::InProgress));
        h.in_progress = false;
        assert!(
            matches!(admit(&l, &mut h, 30.0, 0, 10, Asker::Trigger), Err(Refusal::Cooldown { remaining }) if remaining == 30.0)
        );
        for t in [60.0, 120.0] {
            assert_eq!(admit(&l, &mut h, t, 0, 10, Asker::Trigger), Ok(()));
            h.record_start(t);
            h.in_progress = false;
        }
        assert_eq!(admit(&l, &mut h, 200.0, 0, 10, Asker::Trigger), Err(Refusal::HourlyLimit { max: 3 }));
        assert_eq!(admit(&l, &mut h, 3600.0, 0, 10, Asker::Trigger), Ok(()), "the first one left the hour");
    }

    #[test]
    fn budget_counts_what_is_stored_plus_the_estimate() {
        let l = limits();
        let mut h = History::default();
        assert_eq!(admit(&l, &mut h, 0.0, 900, 100, Asker::Trigger), Ok(()));
        assert_eq!(
            admit(&l, &mut h, 0.0, 900, 101, Asker::Trigger),
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
