//! First-chance exceptions, as the runtime reports them: ExceptionThrown_V1 (keyword Exception
//! 0x8000, level Error) names the type and message of every managed exception when it is
//! thrown, on .NET Core 3.1 and .NET 8 alike, and EventPipe attaches the throwing thread's
//! managed stack. The stack is instruction pointers; a rundown names them ([`MethodMap`]).
//!
//! [`ExceptionLog`] keeps the last N of a stream (a long-lived session's, or [`capture`]'s);
//! [`name`] turns them into what a person reads.

use std::collections::VecDeque;
use std::time::Duration;

use nettrace::events::{self, ExceptionThrown, RuntimeEvent, decode_runtime};
use nettrace::{Event, TraceInfo};
use serde::Serialize;

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::protocol::{Provider, SessionConfig};
use crate::session::{TraceSession, ticks_to_ns};
use crate::symbols::MethodMap;

/// The level ExceptionThrown is written at: asking for no more leaves out the catch, finally
/// and filter events (Informational) that cost a busy app one event per handler.
pub const LEVEL_ERROR: u32 = 2;

/// The runtime provider with only the Exception keyword: the whole cost of watching
/// exceptions is one event (and one stack walk) per throw.
pub fn provider() -> Provider {
    Provider::new(events::RUNTIME_PROVIDER, events::keywords::EXCEPTION, LEVEL_ERROR)
}

/// A session of exceptions only, with stacks, and a rundown at its end to name the frames.
pub fn session_config() -> SessionConfig {
    let mut cfg = SessionConfig::new(vec![provider()]);
    cfg.request_rundown = true;
    cfg.circular_buffer_mb = 16;
    cfg
}

/// One thrown exception, its stack still raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thrown {
    /// When it was thrown: nanoseconds on the trace clock (monotonic; what windows compare).
    pub trace_ns: i64,
    /// When it was thrown, Unix time in nanoseconds, from the trace's sync point.
    pub unix_ns: Option<i64>,
    pub exception_type: String,
    pub message: String,
    pub hresult: u32,
    pub flags: u16,
    /// OS id of the throwing thread.
    pub thread: u64,
    /// Instruction pointers, leaf first.
    pub stack: Vec<u64>,
}

impl Thrown {
    /// The exception in `event`, if it is an ExceptionThrown event; a malformed one is the
    /// decoder's typed error.
    pub fn from_event(info: &TraceInfo, event: &Event<'_>) -> Option<Result<Thrown, nettrace::Error>> {
        if event.metadata.provider != events::RUNTIME_PROVIDER
            || event.metadata.event_id != events::ids::EXCEPTION_THROWN
        {
            return None;
        }
        Some(decode_runtime(event, info.pointer_size).map(|decoded| match decoded {
            RuntimeEvent::ExceptionThrown(e) => Self::new(info, event, &e),
            // decode_runtime maps id 80 of this provider to ExceptionThrown or an error.
            _ => Self::new(info, event, &ExceptionThrown::default()),
        }))
    }

    fn new(info: &TraceInfo, event: &Event<'_>, e: &ExceptionThrown<'_>) -> Thrown {
        Thrown {
            trace_ns: ticks_to_ns(info, event.timestamp),
            unix_ns: unix_ns(info, event.timestamp),
            exception_type: clip(e.exception_type.chars(), MAX_TYPE_CHARS),
            message: clip(e.message.chars(), MAX_MESSAGE_CHARS),
            hresult: e.hresult,
            flags: e.flags,
            thread: event.thread_id,
            stack: event.stack[..event.stack.len().min(MAX_FRAMES)].to_vec(),
        }
    }
}

/// What one kept exception may hold at most: the app writes the message, and a log of the
/// last thousands must stay small whatever it writes (a few KiB an exception).
pub const MAX_MESSAGE_CHARS: usize = 2048;
pub const MAX_TYPE_CHARS: usize = 512;
/// Frames kept per stack, leaf first (the throw site and its callers are what matter).
pub const MAX_FRAMES: usize = 128;

/// The first `max` characters, and `…` when there were more.
fn clip(chars: impl Iterator<Item = char>, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in chars.enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// The last `capacity` exceptions of a stream, and how many it had in all.
#[derive(Debug, Clone)]
pub struct ExceptionLog {
    capacity: usize,
    recent: VecDeque<Thrown>,
    /// Every exception seen.
    pub total: u64,
    /// ExceptionThrown events whose payload did not decode (counted, not kept).
    pub malformed: u64,
}

impl ExceptionLog {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, recent: VecDeque::with_capacity(capacity.min(1024)), total: 0, malformed: 0 }
    }

    /// Keeps the exception in `event`, if any, and returns it.
    pub fn on_event(&mut self, info: &TraceInfo, event: &Event<'_>) -> Option<&Thrown> {
        match Thrown::from_event(info, event)? {
            Ok(t) => self.push(t),
            Err(e) => {
                self.malformed += 1;
                tracing::debug!(error = %e, "malformed ExceptionThrown event");
                None
            }
        }
    }

    /// Counts `t` and keeps it (dropping the oldest beyond the capacity); returns it if kept.
    pub fn push(&mut self, t: Thrown) -> Option<&Thrown> {
        self.total += 1;
        if self.capacity == 0 {
            return None;
        }
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        self.recent.back()
    }

    /// Keep at most `capacity` from now on (the oldest go first).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.recent.len() > capacity {
            self.recent.pop_front();
        }
    }

    /// The last `n` kept, oldest first.
    pub fn last(&self, n: usize) -> Vec<Thrown> {
        self.recent.iter().skip(self.recent.len().saturating_sub(n)).cloned().collect()
    }
}

/// An exception as a person reads it: the artifact's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedException {
    /// RFC 3339 is the caller's to format; Unix nanoseconds here.
    pub unix_ns: Option<i64>,
    #[serde(rename = "type")]
    pub exception_type: String,
    pub message: String,
    /// e.g. `0x80131509`.
    pub hresult: String,
    pub rethrown: bool,
    pub thread: u64,
    /// Managed frames, leaf (the throwing method) first.
    pub stack: Vec<String>,
}

/// Names every exception's frames with `methods` (sealed by the caller).
pub fn name(thrown: &[Thrown], methods: &MethodMap) -> Vec<NamedException> {
    thrown
        .iter()
        .map(|t| NamedException {
            unix_ns: t.unix_ns,
            exception_type: t.exception_type.clone(),
            message: t.message.clone(),
            hresult: format!("{:#010x}", t.hresult),
            rethrown: t.flags & ExceptionThrown::RETHROWN != 0,
            thread: t.thread,
            stack: methods.symbolize(&t.stack),
        })
        .collect()
}

/// What [`capture`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watched {
    /// Every exception thrown while it watched.
    pub thrown: u64,
    /// Those whose type matched the pattern.
    pub matching: u64,
    /// The last `keep` matching ones, oldest first, frames named.
    pub exceptions: Vec<NamedException>,
}

/// Watches `client`'s exceptions for `duration` and names the last `keep` whose type matches
/// `pattern` (see [`crate::glob::matches`]).
pub async fn capture(
    client: &DiagnosticsClient,
    duration: Duration,
    pattern: &str,
    keep: usize,
    timeout: Duration,
) -> Result<Watched, Error> {
    let mut session = TraceSession::start(client, &session_config()).await?;
    let mut log = ExceptionLog::new(keep);
    let mut thrown = 0;
    let mut methods = MethodMap::new();
    let mut sink = |info: &TraceInfo, ev: &Event<'_>| match Thrown::from_event(info, ev) {
        Some(Ok(t)) => {
            thrown += 1;
            if crate::glob::matches(pattern, &t.exception_type) {
                log.push(t);
            }
        }
        Some(Err(_)) => log.malformed += 1,
        None => {
            if let Ok(RuntimeEvent::MethodLoad(m)) = decode_runtime(ev, info.pointer_size) {
                methods.add_event(&m);
            }
        }
    };
    session.pump_for(&mut sink, duration).await?;
    session.finish(&mut sink, timeout).await?;
    methods.seal();
    Ok(Watched { thrown, matching: log.total, exceptions: name(&log.last(keep), &methods) })
}

/// Unix nanoseconds of a trace timestamp: the sync point's UTC time (a SYSTEMTIME) plus the
/// ticks since it. `None` when the header's date is not a date.
pub fn unix_ns(info: &TraceInfo, ticks: i64) -> Option<i64> {
    let [year, month, _weekday, day, hour, minute, second, millis] = info.sync_time_utc.map(i64::from);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(0..24).contains(&hour) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let sync_ns = ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000 + millis).checked_mul(1_000_000)?;
    let since = ticks_to_ns(info, ticks).checked_sub(ticks_to_ns(info, info.sync_time_qpc))?;
    sync_ns.checked_add(since)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use nettrace::testing::payloads::exception_thrown_v1;
    use nettrace::testing::{event, native_metadata};

    fn info() -> TraceInfo {
        TraceInfo {
            // 2026-12-07 15:00:00.250 UTC at QPC 1000 (ns clock).
            sync_time_utc: [2026, 12, 1, 7, 15, 0, 0, 250],
            sync_time_qpc: 1000,
            qpc_frequency: 1_000_000_000,
            pointer_size: 8,
            process_id: 1,
            number_of_processors: 2,
            expected_cpu_sampling_rate: 0,
        }
    }

    #[test]
    fn the_log_keeps_the_last_n_and_counts_all_and_the_malformed() {
        let md = native_metadata(1, events::RUNTIME_PROVIDER, events::ids::EXCEPTION_THROWN, 1);
        let mut log = ExceptionLog::new(2);
        for i in 0..3 {
            let payload = exception_thrown_v1(8, "App.E", &format!("m{i}"), 0, 0x80131509, 0);
            let mut ev = event(&md, &payload);
            ev.timestamp = 1000 + i;
            assert_eq!(log.on_event(&info(), &ev).map(|t| t.message.clone()), Some(format!("m{i}")));
        }
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        let payload = exception_thrown_v1(8, "App.E", &long, 0, 0, 0);
        let stack = vec![0x1000; MAX_FRAMES + 5];
        let mut ev = event(&md, &payload);
        ev.stack = &stack;
        let kept = log.on_event(&info(), &ev).unwrap();
        assert_eq!((kept.message.chars().count(), kept.message.ends_with('…')), (MAX_MESSAGE_CHARS + 1, true));
        assert_eq!(kept.stack.len(), MAX_FRAMES, "bounded whatever the app throws");
        let cut = exception_thrown_v1(8, "App.E", "x", 0, 0, 0);
        assert!(log.on_event(&info(), &event(&md, &cut[..5])).is_none());
        let other = native_metadata(2, events::RUNTIME_PROVIDER, events::ids::CONTENTION_START, 1);
        assert!(log.on_event(&info(), &event(&other, &[0, 0, 0])).is_none());
        assert_eq!((log.total, log.malformed), (4, 1));
        let kept: Vec<String> = log.last(10).into_iter().map(|t| t.message.chars().take(2).collect()).collect();
        assert_eq!(kept, ["m2", "xx"]);
        assert_eq!(log.last(1)[0].message.len(), MAX_MESSAGE_CHARS + '…'.len_utf8());
        log.set_capacity(1);
        assert_eq!(log.last(10).len(), 1);
    }

    #[test]
    fn times_are_the_sync_point_plus_the_ticks_since() {
        let ns = unix_ns(&info(), 1000 + 1_500_000_000).unwrap();
        // 2026-12-07T15:00:01.750Z
        assert_eq!(ns, 1_796_655_601_750_000_000);
        let mut bad = info();
        bad.sync_time_utc[1] = 13;
        assert_eq!(unix_ns(&bad, 0), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn named_frames_and_flags() {
        let mut methods = MethodMap::new();
        methods.add(0x1000, 0x100, "App.Orders.Load()".into());
        methods.seal();
        let t = Thrown {
            trace_ns: 0,
            unix_ns: None,
            exception_type: "System.TimeoutException".into(),
            message: "slow".into(),
            hresult: 0x80131505,
            flags: ExceptionThrown::RETHROWN,
            thread: 7,
            stack: vec![0x1010, 0x9999],
        };
        let named = name(&[t], &methods);
        assert_eq!(named[0].stack, ["App.Orders.Load()", crate::symbols::UNKNOWN_FRAME]);
        assert_eq!(named[0].hresult, "0x80131505");
        assert!(named[0].rethrown);
    }
}
