//! Managed stacks of every thread, the dotnet-stack way: a SampleProfiler session samples all
//! managed threads (each sample carries the thread's stack), and the rundown at the end of the
//! session lists every loaded method with its code range, which turns the IPs into names.

use std::collections::BTreeMap;
use std::time::Duration;

use nettrace::events::{self, RuntimeEvent, decode_runtime};
use nettrace::{Event, TraceInfo};

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::protocol::{Provider, SessionConfig};
use crate::session::TraceSession;
use crate::symbols::MethodMap;

/// One thread's managed stack, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ThreadStack {
    pub os_thread_id: u64,
    /// The sampler's classification: `managed` or `external` (native code). Not a reliable
    /// "blocked" signal: .NET Core 3.1 reports a thread blocked in `Monitor.Enter` as managed.
    pub state: &'static str,
    pub frames: Vec<String>,
}

/// SampleProfiler at informational level, with rundown (the method names) and stacks.
pub fn session_config() -> SessionConfig {
    let mut cfg = SessionConfig::new(vec![Provider::new(events::SAMPLE_PROFILER_PROVIDER, 0, 4)]);
    cfg.request_rundown = true;
    cfg.circular_buffer_mb = 64;
    cfg
}

/// What a stacks session yields: the first sample of every thread and the method map.
#[derive(Default)]
pub struct StackCollector {
    first_sample: BTreeMap<u64, (u32, Vec<u64>)>,
    pub methods: MethodMap,
}

impl StackCollector {
    pub fn on_event(&mut self, info: &TraceInfo, event: &Event<'_>) {
        match decode_runtime(event, info.pointer_size) {
            Ok(RuntimeEvent::ThreadSample { kind }) => {
                self.first_sample.entry(event.thread_id).or_insert_with(|| (kind, event.stack.to_vec()));
            }
            Ok(RuntimeEvent::MethodLoad(m)) => self.methods.add_event(&m),
            _ => {}
        }
    }

    /// Symbolize every thread's stack; threads with no managed frame at all are dropped
    /// (the sampler only reports managed threads, but be safe).
    pub fn finish(mut self) -> (Vec<ThreadStack>, MethodMap) {
        self.methods.seal();
        let methods = self.methods;
        let threads = self
            .first_sample
            .into_iter()
            .map(|(tid, (kind, ips))| ThreadStack {
                os_thread_id: tid,
                state: if kind == 2 { "managed" } else { "external" },
                frames: methods.symbolize(&ips),
            })
            .filter(|t| t.frames.iter().any(|f| f != crate::symbols::UNKNOWN_FRAME))
            .collect();
        (threads, methods)
    }
}

/// Sample every managed thread once and name the frames. `sample_for` is how long the sampler
/// runs before the session is stopped (10 ms is enough for one sample per thread).
pub async fn capture(
    client: &DiagnosticsClient,
    sample_for: Duration,
    timeout: Duration,
) -> Result<Vec<ThreadStack>, Error> {
    Ok(capture_with_methods(client, sample_for, timeout).await?.0)
}

/// Every loaded method's code range, from a rundown (a session stopped at once).
pub async fn method_map(client: &DiagnosticsClient, timeout: Duration) -> Result<MethodMap, Error> {
    Ok(capture_with_methods(client, Duration::ZERO, timeout).await?.1)
}

async fn capture_with_methods(
    client: &DiagnosticsClient,
    sample_for: Duration,
    timeout: Duration,
) -> Result<(Vec<ThreadStack>, MethodMap), Error> {
    let mut session = TraceSession::start(client, &session_config()).await?;
    let mut collector = StackCollector::default();
    let mut sink = |info: &TraceInfo, ev: &Event<'_>| collector.on_event(info, ev);
    session.pump_for(&mut sink, sample_for).await?;
    session.finish(&mut sink, timeout).await?;
    Ok(collector.finish())
}
