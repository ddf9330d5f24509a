//! Live Monitor-deadlock detection from contention events (.NET 8+).
//!
//! ContentionStart v2 names the lock, the locked object and the owner's OS thread id, and
//! carries the waiter's stack: a cycle of waiters is a deadlock, seen in seconds without a
//! dump. This module turns nettrace events into [`analysis::wait_for`] input; the graph logic
//! itself is pure and lives there.

use analysis::wait_for::{ContentionStart, ContentionStop, Deadlock, LockCreated, Timestamp, WaitForGraph};
use nettrace::events::{self, RuntimeEvent, decode_runtime};
use nettrace::{Event, TraceInfo};

use crate::protocol::{Provider, SessionConfig};
use crate::session::ticks_to_ns;

/// Contention events at informational level, with stacks (the waiters' stacks are the
/// evidence), and no rundown.
pub fn session_config() -> SessionConfig {
    let mut cfg = SessionConfig::new(vec![Provider::new(events::RUNTIME_PROVIDER, events::keywords::CONTENTION, 4)]);
    cfg.circular_buffer_mb = 16;
    cfg
}

/// What the contention stream tells about the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Nothing seen yet.
    Unknown,
    /// ContentionStart v2: owner and lock identity known, deadlocks detectable.
    OwnerAware,
    /// ContentionStart v1 (.NET Core 3.1–7): only "someone waited"; no deadlock detection.
    WaitsOnly,
}

pub struct ContentionTracker {
    pub graph: WaitForGraph,
    pub capability: Capability,
    /// Slow-path lock acquisitions seen (what `monitor-lock-contention-count` counts).
    pub contentions: u64,
    last_event_ns: Option<u64>,
    last_event_at: Option<std::time::Instant>,
}

impl ContentionTracker {
    pub fn new(graph: WaitForGraph) -> Self {
        Self { graph, capability: Capability::Unknown, contentions: 0, last_event_ns: None, last_event_at: None }
    }

    pub fn on_event(&mut self, info: &TraceInfo, event: &Event<'_>) {
        if event.metadata.provider != events::RUNTIME_PROVIDER {
            return;
        }
        let now = ticks_to_ns(info, event.timestamp).max(0) as u64;
        match decode_runtime(event, info.pointer_size) {
            Ok(RuntimeEvent::ContentionStart { lock_id: Some(lock_id), object_id, owner_thread_id, .. }) => {
                self.capability = Capability::OwnerAware;
                self.contentions += 1;
                self.graph.on_start(ContentionStart {
                    waiter: event.thread_id,
                    lock_id,
                    object: object_id.unwrap_or(0),
                    owner: owner_thread_id.unwrap_or(0),
                    stack: event.stack.to_vec(),
                    timestamp: Timestamp::from_nanos(now),
                });
            }
            Ok(RuntimeEvent::ContentionStart { .. }) => {
                if self.capability == Capability::Unknown {
                    self.capability = Capability::WaitsOnly;
                }
                self.contentions += 1;
            }
            Ok(RuntimeEvent::ContentionStop { .. }) => {
                self.graph.on_stop(ContentionStop { waiter: event.thread_id, timestamp: Timestamp::from_nanos(now) })
            }
            Ok(RuntimeEvent::ContentionLockCreated { lock_id, object_id }) => {
                self.graph.on_lock_created(LockCreated { lock_id, object: object_id })
            }
            _ => return,
        }
        self.last_event_ns = Some(now);
        self.last_event_at = Some(std::time::Instant::now());
    }

    /// "Now" on the trace clock: the last event's time plus the wall time since, so the
    /// confirm window runs on even when the deadlocked threads fall silent.
    pub fn now(&self) -> Timestamp {
        match (self.last_event_ns, self.last_event_at) {
            (Some(ns), Some(at)) => Timestamp::from_nanos(ns.saturating_add(at.elapsed().as_nanos() as u64)),
            _ => Timestamp::default(),
        }
    }

    pub fn deadlocks(&self) -> Vec<Deadlock> {
        self.graph.deadlocks(self.now())
    }
}
