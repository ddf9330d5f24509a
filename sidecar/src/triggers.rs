//! Trigger decisions: pure functions from (policy, latest values, time) to firings. No I/O, no
//! clock: the caller passes `now` in seconds on a monotonic clock, so every rule is unit-tested
//! with made-up time.

use std::collections::VecDeque;

use api::{DumpPolicySpec, Trigger, TriggerKind};

/// The latest runtime values of one process, in base units (bytes, ratio, per second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Values {
    pub gc_heap_bytes: Option<f64>,
    pub working_set_bytes: Option<f64>,
    pub cpu_ratio: Option<f64>,
    pub threadpool_threads: Option<f64>,
    pub threadpool_queue: Option<f64>,
    pub exceptions_per_sec: Option<f64>,
    pub contentions_per_sec: Option<f64>,
}

/// A trigger that fired, with what was observed: every firing is logged with its value, and
/// the capture's manifest records it (the contract type, `api::wire::Firing`).
pub use api::wire::Firing;

/// Threshold + duration + hysteresis. Armed at start; fires once the value stayed above
/// `above` for `for`; re-arms only when the value drops below `clearBelow` (default 90% of
/// `above`), so a value that stays high fires once, not once per interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threshold {
    disarmed: bool,
    above_since: Option<f64>,
}

impl Threshold {
    pub fn step(&mut self, above: f64, clear_below: f64, hold: f64, value: f64, now: f64) -> bool {
        if self.disarmed {
            if value < clear_below {
                self.disarmed = false;
                self.above_since = None;
            }
            return false;
        }
        if value > above {
            let since = *self.above_since.get_or_insert(now);
            if now - since >= hold {
                self.disarmed = true;
                self.above_since = None;
                return true;
            }
        } else {
            self.above_since = None;
        }
        false
    }
}

/// Heap growth in bytes per minute over a sliding window of `window` seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Growth {
    samples: VecDeque<(f64, f64)>,
}

impl Growth {
    /// Add a sample; the rate once the window is (nearly) covered.
    pub fn push(&mut self, now: f64, bytes: f64, window: f64) -> Option<f64> {
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t, _)| now - t > window) {
            self.samples.pop_front();
        }
        let &(t0, b0) = self.samples.front()?;
        let dt = now - t0;
        // Tolerate one interval of jitter: counters arrive about, not exactly, every interval.
        if dt <= 0.0 || dt < window * 0.8 {
            return None;
        }
        Some((bytes - b0) / dt * 60.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
enum State {
    #[default]
    None,
    Threshold(Threshold),
    Growth(Growth, Threshold),
    Schedule {
        last: Option<f64>,
    },
    Cron {
        cron: api::Cron,
        next: Option<u64>,
    },
}

/// Per-process trigger state for one policy. Rebuilt when the policy changes.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    states: Vec<State>,
    /// Per trigger: whether its `processes` filter admits this process.
    applies: Vec<bool>,
}

/// Whether `processes` (globs, [`diag::glob::matches`], against the whole process name or the
/// whole command line) admits a process. An empty filter admits every process.
pub fn processes_match(filter: &[String], name: &str, command_line: &str) -> bool {
    filter.is_empty() || filter.iter().any(|g| diag::glob::matches(g, name) || diag::glob::matches(g, command_line))
}

impl Engine {
    /// Every trigger applies (no process to filter on).
    pub fn new(policy: &DumpPolicySpec) -> Self {
        Self::for_process(policy, None)
    }

    /// Triggers whose `processes` filter does not admit `process` (name, command line) never
    /// fire for it.
    pub fn for_process(policy: &DumpPolicySpec, process: Option<(&str, &str)>) -> Self {
        let applies = policy
            .triggers
            .iter()
            .map(|t| process.is_none_or(|(name, cmd)| processes_match(&t.processes, name, cmd)))
            .collect();
        let states = policy
            .triggers
            .iter()
            .map(|t| match t.kind {
                TriggerKind::GcHeapGrowth => State::Growth(Growth::default(), Threshold::default()),
                k if k.is_threshold() => State::Threshold(Threshold::default()),
                TriggerKind::Schedule => match t.cron.as_deref().map(api::Cron::parse) {
                    Some(Ok(cron)) => State::Cron { cron, next: None },
                    _ => State::Schedule { last: None },
                },
                _ => State::None,
            })
            .collect();
        Self { states, applies }
    }

    /// Whether trigger `index` may fire for this engine's process.
    pub fn applies(&self, index: usize) -> bool {
        self.applies.get(index).copied().unwrap_or(false)
    }

    /// Evaluate metric and schedule triggers against the latest values. `now` is monotonic
    /// seconds (durations), `unix_now` wall-clock seconds (cron times, UTC).
    pub fn evaluate(&mut self, policy: &DumpPolicySpec, v: &Values, now: f64, unix_now: u64) -> Vec<Firing> {
        let mut out = Vec::new();
        for (index, (t, state)) in policy.triggers.iter().zip(self.states.iter_mut()).enumerate() {
            if !self.applies.get(index).copied().unwrap_or(false) {
                continue;
            }
            match state {
                State::Threshold(th) => {
                    let Some(value) = metric(t.kind, v) else { continue };
                    let Some(bound) = Bound::of(t) else { continue };
                    let hold = t.for_.map(|d| d.as_secs_f64()).unwrap_or(0.0);
                    if bound.step(th, hold, value, now) {
                        out.push(firing(index, t, value, format!("{} {bound} for {hold}s", t.kind.name())));
                    }
                }
                State::Growth(g, th) => {
                    let Some(heap) = v.gc_heap_bytes else { continue };
                    let window = t.for_.map(|d| d.as_secs_f64()).unwrap_or(60.0);
                    let Some(rate) = g.push(now, heap, window) else { continue };
                    let Some(bound) = Bound::of(t) else { continue };
                    if bound.step(th, 0.0, rate, now) {
                        out.push(firing(index, t, rate, format!("gc heap grew {rate:.0} B/min over {window}s")));
                    }
                }
                State::Schedule { last } => {
                    let every = t.every.map(|d| d.as_secs_f64()).unwrap_or(f64::INFINITY);
                    let since = *last.get_or_insert(now);
                    if now - since >= every {
                        *last = Some(now);
                        out.push(firing(index, t, every, format!("every {every}s")));
                    }
                }
                State::Cron { cron, next } => {
                    let due = *next.get_or_insert_with(|| cron.next_after(unix_now).unwrap_or(u64::MAX));
                    if unix_now >= due {
                        *next = Some(cron.next_after(unix_now).unwrap_or(u64::MAX));
                        out.push(firing(index, t, due as f64, format!("cron {:?}", t.cron.as_deref().unwrap_or(""))));
                    }
                }
                State::None => {}
            }
        }
        out
    }

    /// An event trigger (deadlock, on demand): fires every trigger of that kind. Rate limits,
    /// not this function, keep a repeating event from capturing too often. An explicit
    /// on-demand request (signal, file) captures even when the policy names no `onDemand`
    /// trigger: someone asked.
    pub fn event(&self, policy: &DumpPolicySpec, kind: TriggerKind, value: f64, detail: &str) -> Vec<Firing> {
        let mut out: Vec<Firing> = policy
            .triggers
            .iter()
            .enumerate()
            .filter(|&(index, t)| t.kind == kind && self.applies(index))
            .map(|(index, t)| firing(index, t, value, detail.to_string()))
            .collect();
        if out.is_empty() && kind == TriggerKind::OnDemand {
            out.push(Firing { index: None, trigger: kind, value, threshold: None, detail: detail.to_string() });
        }
        out
    }
}

pub(crate) fn firing(index: usize, t: &Trigger, value: f64, detail: String) -> Firing {
    Firing { index: Some(index), trigger: t.kind, value, threshold: t.above.or(t.below).map(|a| a.value()), detail }
}

/// An `above` or `below` threshold with its re-arm level, as one `above` comparison: a `below`
/// trigger compares the negated value, so one state machine ([`Threshold`]) serves both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// 1 for `above`, -1 for `below`.
    sign: f64,
    threshold: f64,
    clear: f64,
}

impl Bound {
    /// `None` for a trigger with neither `above` nor `below` (a validated policy has one).
    pub fn of(t: &Trigger) -> Option<Self> {
        match (t.above, t.below) {
            (Some(a), _) => {
                let a = a.value();
                Some(Self { sign: 1.0, threshold: a, clear: t.clear_below.map_or(a * 0.9, |c| c.value()) })
            }
            (None, Some(b)) => {
                let b = b.value();
                Some(Self { sign: -1.0, threshold: b, clear: t.clear_above.map_or(b * 1.1, |c| c.value()) })
            }
            (None, None) => None,
        }
    }

    /// Whether `value` is on the firing side (the worst of several values is the largest for
    /// `above`, the smallest for `below`).
    pub fn worse(&self, a: f64, b: f64) -> f64 {
        if self.sign > 0.0 { a.max(b) } else { a.min(b) }
    }

    pub fn step(&self, th: &mut Threshold, hold: f64, value: f64, now: f64) -> bool {
        th.step(self.sign * self.threshold, self.sign * self.clear, hold, self.sign * value, now)
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.sign > 0.0 { "above" } else { "below" };
        write!(f, "{side} {}", self.threshold)
    }
}

/// The value a threshold trigger compares.
pub fn metric(kind: TriggerKind, v: &Values) -> Option<f64> {
    match kind {
        TriggerKind::GcHeapBytes => v.gc_heap_bytes,
        TriggerKind::WorkingSet => v.working_set_bytes,
        TriggerKind::Cpu => v.cpu_ratio,
        TriggerKind::Threads => v.threadpool_threads,
        TriggerKind::ThreadPoolQueue => v.threadpool_queue,
        TriggerKind::ExceptionRate => v.exceptions_per_sec,
        TriggerKind::LockContentionRate => v.contentions_per_sec,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> DumpPolicySpec {
        DumpPolicySpec::from_yaml(yaml).unwrap()
    }

    #[test]
    fn process_filters_match_the_name_or_the_whole_command_line() {
        let f = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cmd = "/usr/bin/dotnet /app/Orders.Api.dll --role=worker";
        assert!(processes_match(&[], "Orders.Api", cmd));
        assert!(processes_match(&f(&["Orders.Api"]), "Orders.Api", cmd));
        assert!(processes_match(&f(&["Orders.*"]), "Orders.Api", cmd));
        assert!(processes_match(&f(&["*--role=worker*"]), "Orders.Api", cmd));
        assert!(processes_match(&f(&["Billing", "Orders.Ap?"]), "Orders.Api", cmd));
        assert!(!processes_match(&f(&["Orders"]), "Orders.Api", cmd), "whole name, not a substring");
        assert!(!processes_match(&f(&["*--role=web*"]), "Orders.Api", cmd));
        assert!(!processes_match(&f(&["orders.api"]), "Orders.Api", cmd), "case-sensitive");
    }

    #[test]
    fn threshold_needs_duration_and_fires_once_while_high() {
        let p = policy("triggers: [{type: gcHeapBytes, above: 100, for: 3s}]");
        let mut e = Engine::new(&p);
        let at = |e: &mut Engine, heap: f64, t: f64| {
            e.evaluate(&p, &Values { gc_heap_bytes: Some(heap), ..Default::default() }, t, 0)
        };
        assert!(at(&mut e, 150.0, 0.0).is_empty());
        assert!(at(&mut e, 150.0, 2.0).is_empty(), "not yet 3 s");
        let f = at(&mut e, 160.0, 3.0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].value, 160.0);
        assert_eq!(f[0].threshold, Some(100.0));
        for t in 4..100 {
            assert!(at(&mut e, 150.0, t as f64).is_empty(), "stays high: no second firing");
        }
        assert!(at(&mut e, 95.0, 100.0).is_empty(), "between clear (90) and above: still disarmed");
        assert!(at(&mut e, 150.0, 101.0).is_empty());
        assert!(at(&mut e, 150.0, 105.0).is_empty(), "never re-armed");
        assert!(at(&mut e, 80.0, 106.0).is_empty(), "re-armed below 90");
        assert!(at(&mut e, 150.0, 107.0).is_empty());
        assert_eq!(at(&mut e, 150.0, 110.0).len(), 1, "fires again after re-arming");
    }

    #[test]
    fn a_dip_resets_the_duration() {
        let p = policy("triggers: [{type: cpu, above: 50%, for: 2s}]");
        let mut e = Engine::new(&p);
        let cpu =
            |e: &mut Engine, c: f64, t: f64| e.evaluate(&p, &Values { cpu_ratio: Some(c), ..Default::default() }, t, 0);
        assert!(cpu(&mut e, 0.9, 0.0).is_empty());
        assert!(cpu(&mut e, 0.1, 1.0).is_empty());
        assert!(cpu(&mut e, 0.9, 2.0).is_empty());
        assert!(cpu(&mut e, 0.9, 3.0).is_empty());
        assert_eq!(cpu(&mut e, 0.9, 4.0).len(), 1);
    }

    #[test]
    fn every_metric_kind_reads_its_value() {
        let v = Values {
            gc_heap_bytes: Some(1.0),
            working_set_bytes: Some(2.0),
            cpu_ratio: Some(0.3),
            threadpool_threads: Some(4.0),
            threadpool_queue: Some(5.0),
            exceptions_per_sec: Some(6.0),
            contentions_per_sec: Some(7.0),
        };
        let kinds = [
            (TriggerKind::GcHeapBytes, 1.0),
            (TriggerKind::WorkingSet, 2.0),
            (TriggerKind::Cpu, 0.3),
            (TriggerKind::Threads, 4.0),
            (TriggerKind::ThreadPoolQueue, 5.0),
            (TriggerKind::ExceptionRate, 6.0),
            (TriggerKind::LockContentionRate, 7.0),
        ];
        for (k, want) in kinds {
            assert_eq!(metric(k, &v), Some(want), "{k:?}");
        }
        assert_eq!(metric(TriggerKind::Deadlock, &v), None);
        let p = policy("triggers: [{type: exceptionRate, above: 5}, {type: threadPoolQueue, above: 10}]");
        let f = Engine::new(&p).evaluate(&p, &v, 0.0, 0);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].trigger, f[0].value), (TriggerKind::ExceptionRate, 6.0));
    }

    #[test]
    fn growth_rate_over_the_window() {
        let p = policy("triggers: [{type: gcHeapGrowth, above: 60Mi, for: 10s}]");
        let mut e = Engine::new(&p);
        let mib = 1024.0 * 1024.0;
        let mut fired = Vec::new();
        // 2 MiB/s = 120 MiB/min.
        for t in 0..20 {
            let v = Values { gc_heap_bytes: Some(100.0 * mib + 2.0 * mib * t as f64), ..Default::default() };
            fired.extend(e.evaluate(&p, &v, t as f64, 0).into_iter().map(|f| (t, f.value)));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let (t, rate) = fired[0];
        assert_eq!(t, 8, "fires once 80% of the window is covered");
        assert!((rate / mib - 120.0).abs() < 1e-6, "{}", rate / mib);
        // A flat heap never fires.
        let mut e = Engine::new(&p);
        for t in 0..30 {
            let v = Values { gc_heap_bytes: Some(100.0 * mib), ..Default::default() };
            assert!(e.evaluate(&p, &v, t as f64, 0).is_empty());
        }
    }

    #[test]
    fn schedule_fires_every_period() {
        let p = policy("limits: {cooldown: 10s}\ntriggers: [{type: schedule, every: 10s}]");
        let mut e = Engine::new(&p);
        let times: Vec<u32> =
            (0..35).filter(|&t| !e.evaluate(&p, &Values::default(), t as f64, 0).is_empty()).collect();
        assert_eq!(times, vec![10, 20, 30]);
    }

    #[test]
    fn cron_fires_at_each_matching_minute_once() {
        let p = policy("triggers: [{type: schedule, cron: \"*/10 * * * *\"}]");
        let mut e = Engine::new(&p);
        let start = 1_795_832_100; // 02:15:00Z
        let fired: Vec<u64> = (0..40 * 60)
            .step_by(5)
            .map(|s| start + s)
            .filter(|&t| !e.evaluate(&p, &Values::default(), 0.0, t).is_empty())
            .map(|t| (t - start) / 60)
            .collect();
        assert_eq!(fired, vec![5, 15, 25, 35], "02:20, 02:30, 02:40, 02:50");
    }

    #[test]
    fn events_fire_matching_triggers_only() {
        let p = policy("triggers: [{type: deadlock}, {type: onDemand}, {type: gcHeapBytes, above: 1}]");
        let e = Engine::new(&p);
        let f = e.event(&p, TriggerKind::Deadlock, 2.0, "2 threads");
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].index, f[0].trigger), (Some(0), TriggerKind::Deadlock));
        assert!(e.event(&p, TriggerKind::Schedule, 0.0, "").is_empty());
        let none = policy("triggers: [{type: deadlock}]");
        let f = Engine::new(&none).event(&none, TriggerKind::OnDemand, 1.0, "SIGUSR1");
        assert_eq!((f.len(), f[0].index), (1, None), "a request is honoured without an onDemand trigger");
    }
}
