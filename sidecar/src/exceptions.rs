//! Exceptions: the `exception` trigger (`count` thrown exceptions whose type matches
//! `exceptionType` within `window`) and the `exceptions` capture (the last
//! `capture.exceptionsLast` with named stacks). Both read the runtime's ExceptionThrown events,
//! which the watcher's one session per process carries while the policy asks for either
//! ([`add_to_session`]); the decisions here are pure, with event times passed in.

use std::collections::VecDeque;
use std::time::Duration;

use api::{DumpPolicySpec, TriggerKind};
use diag::exceptions::{ExceptionLog, Thrown};
use diag::protocol::SessionConfig;

use crate::triggers::Firing;

/// An exception trigger's window when the policy names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Adds the runtime's exception events to the watcher's session: into the runtime provider's
/// entry when there is one (contention on .NET 8: one entry per provider, its level serves both),
/// else as an entry of its own at level Error, where nothing but ExceptionThrown is written.
pub fn add_to_session(cfg: &mut SessionConfig) {
    let wanted = diag::exceptions::provider();
    match cfg.providers.iter_mut().find(|p| p.name == wanted.name) {
        Some(p) => {
            p.keywords |= wanted.keywords;
            p.level = p.level.max(wanted.level);
        }
        None => cfg.providers.push(wanted),
    }
}

/// A sliding window of event times (seconds on one monotonic clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    times: VecDeque<f64>,
}

impl Window {
    /// Records one matching exception thrown at `now`; true when `count` of them fall within
    /// the last `window` seconds. Firing empties the window: the next firing takes `count` new
    /// exceptions, so a steady stream fires once per `count`, and the limits (cooldown, hourly
    /// cap) decide how many of those become captures.
    pub fn record(&mut self, now: f64, count: u32, window: f64) -> bool {
        self.times.push_back(now);
        while self.times.front().is_some_and(|&t| now - t > window) {
            self.times.pop_front();
        }
        // Older ones than the last `count` can never matter again.
        while self.times.len() > count.max(1) as usize {
            self.times.pop_front();
        }
        if self.times.len() >= count.max(1) as usize {
            self.times.clear();
            return true;
        }
        false
    }
}

/// One process' exceptions: the latest ones (what a capture holds) and a window per exception
/// trigger of the policy that applies to this process (its `processes` filter, `applies`).
#[derive(Debug, Clone)]
pub struct Exceptions {
    pub log: ExceptionLog,
    windows: Vec<Option<Window>>,
}

impl Exceptions {
    pub fn new(policy: &DumpPolicySpec, applies: impl Fn(usize) -> bool) -> Self {
        Self { log: ExceptionLog::new(kept(policy)), windows: windows(policy, applies) }
    }

    /// A changed policy: new windows (counts start over), the log kept at the new size.
    pub fn set_policy(&mut self, policy: &DumpPolicySpec, applies: impl Fn(usize) -> bool) {
        self.log.set_capacity(kept(policy));
        self.windows = windows(policy, applies);
    }

    /// Keeps `thrown` and returns the exception triggers it fires.
    pub fn on_thrown(&mut self, policy: &DumpPolicySpec, thrown: Thrown) -> Vec<Firing> {
        let now = thrown.trace_ns as f64 / 1e9;
        let mut out = Vec::new();
        for (index, (t, window)) in policy.triggers.iter().zip(self.windows.iter_mut()).enumerate() {
            let Some(window) = window else { continue };
            if !diag::glob::matches(t.exception_type.as_deref().unwrap_or("*"), &thrown.exception_type) {
                continue;
            }
            let count = t.count.unwrap_or(1);
            let span = t.window.map_or(DEFAULT_WINDOW.as_secs_f64(), |w| w.as_secs_f64());
            if window.record(now, count, span) {
                let what = if count == 1 { "exception".to_string() } else { format!("{count} exceptions") };
                out.push(Firing {
                    index: Some(index),
                    trigger: TriggerKind::Exception,
                    value: f64::from(count),
                    threshold: Some(f64::from(count)),
                    detail: format!(
                        "{what} matching {:?} within {span}s, the last {} ({:?}) on thread {}",
                        t.exception_type.as_deref().unwrap_or("*"),
                        thrown.exception_type,
                        thrown.message,
                        thrown.thread
                    ),
                });
            }
        }
        self.log.push(thrown);
        out
    }
}

/// How many exceptions a capture of `policy` holds: none unless it captures exceptions.
fn kept(policy: &DumpPolicySpec) -> usize {
    if policy.captures_exceptions() { policy.capture.exceptions_last as usize } else { 0 }
}

fn windows(policy: &DumpPolicySpec, applies: impl Fn(usize) -> bool) -> Vec<Option<Window>> {
    let windows = policy.triggers.iter().enumerate();
    windows.map(|(i, t)| (t.kind == TriggerKind::Exception && applies(i)).then(Window::default)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thrown(at_s: f64, ty: &str) -> Thrown {
        Thrown {
            trace_ns: (at_s * 1e9) as i64,
            unix_ns: None,
            exception_type: ty.into(),
            message: "m".into(),
            hresult: 0,
            flags: 0,
            thread: 9,
            stack: Vec::new(),
        }
    }

    #[test]
    fn the_window_fires_at_count_within_it_and_starts_over() {
        let mut w = Window::default();
        assert!(!w.record(0.0, 3, 10.0));
        assert!(!w.record(1.0, 3, 10.0));
        assert!(w.record(2.0, 3, 10.0), "third within 10 s");
        assert!(!w.record(3.0, 3, 10.0), "counting starts over after a firing");
        assert!(!w.record(4.0, 3, 10.0));
        assert!(!w.record(20.0, 3, 10.0), "the two before fell out of the window");
        assert!(!w.record(21.0, 3, 10.0));
        assert!(w.record(22.0, 3, 10.0));
        assert!(w.record(100.0, 1, 10.0), "count 1: every one fires");
    }

    #[test]
    fn only_matching_exceptions_count_towards_their_trigger() {
        let p = DumpPolicySpec::from_yaml(
            "triggers: [{type: exception, exceptionType: \"System.*Timeout*\", count: 3, window: 10s},\n\
             {type: exception, exceptionType: \"App.*\"}, {type: deadlock}]\ncapture: {kinds: [exceptions], exceptionsLast: 4}",
        )
        .unwrap();
        let mut e = Exceptions::new(&p, |_| true);
        let mut fired = Vec::new();
        for (i, ty) in ["System.InvalidOperationException", "System.TimeoutException", "System.TimeoutException"]
            .iter()
            .chain(["System.InvalidOperationException"; 5].iter())
            .enumerate()
        {
            fired.extend(e.on_thrown(&p, thrown(i as f64 * 0.1, ty)));
        }
        assert!(fired.is_empty(), "two timeouts and six others: not yet 3 timeouts");
        let f = e.on_thrown(&p, thrown(1.0, "System.TimeoutException"));
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].index, f[0].trigger, f[0].value), (Some(0), TriggerKind::Exception, 3.0));
        assert!(f[0].detail.contains("3 exceptions matching \"System.*Timeout*\" within 10s"), "{}", f[0].detail);
        let f = e.on_thrown(&p, thrown(1.1, "App.Boom"));
        assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), [Some(1)], "count 1 by default");
        assert_eq!(e.log.total, 10);
        assert_eq!(e.log.last(100).len(), 4, "exceptionsLast");
        // A trigger whose `processes` filter leaves this process out keeps no window, never fires.
        let p = DumpPolicySpec::from_yaml("triggers: [{type: exception}, {type: exception}]").unwrap();
        let mut e = Exceptions::new(&p, |i| i == 1);
        let f = e.on_thrown(&p, thrown(0.0, "X"));
        assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), [Some(1)]);
        // Without an exceptions capture, nothing is kept, only counted.
        let p = DumpPolicySpec::from_yaml("triggers: [{type: exception}]").unwrap();
        let mut e = Exceptions::new(&p, |_| true);
        assert_eq!(e.on_thrown(&p, thrown(0.0, "X")).len(), 1);
        assert!(e.log.last(10).is_empty());
    }
}
