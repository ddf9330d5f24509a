//! Heap snapshots the dotnet-gcdump way: enabling the runtime provider with the GC heap
//! snapshot keywords makes the runtime run a full blocking GC and describe every live object
//! (GCBulkNode), its references (GCBulkEdge), the roots and the types while it marks.
//!
//! [`HeapSnapshotCollector`] is the pure part: it picks the induced GC's window out of the
//! event stream and feeds a histogram (memory per type, not per object) and, when asked, an
//! object graph. [`capture`] drives a real session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use analysis::heap::{HeapHistogram, HeapHistogramBuilder, ObjectGraph, ObjectGraphBuilder, RootKind};
use nettrace::events::{self, RuntimeEvent, decode_runtime};
use nettrace::{Event, TraceInfo};

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::protocol::{Provider, SessionConfig};
use crate::session::TraceSession;

/// GCReason::Induced and GCType::NonConcurrent: the GC the snapshot keywords force.
const REASON_INDUCED: u32 = 1;
const TYPE_NON_CONCURRENT: u32 = 0;

pub fn session_config() -> SessionConfig {
    let mut cfg =
        SessionConfig::new(vec![Provider::new(events::RUNTIME_PROVIDER, events::keywords::GC_HEAP_SNAPSHOT, 5)]);
    // The runtime drops events when the buffer fills; a big heap emits hundreds of MB quickly.
    cfg.circular_buffer_mb = 1024;
    cfg
}

/// Where the collector stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    WaitingForGc,
    InGc { count: u32 },
    Done,
}

pub struct HeapSnapshotCollector {
    phase: Phase,
    histogram: HeapHistogramBuilder,
    graph: Option<ObjectGraphBuilder>,
    pub nodes: u64,
    pub edges: u64,
    next_node_event: u32,
    next_edge_event: u32,
    error: Option<Error>,
    /// Every type name announced (by id), for later snapshots of the same process.
    type_names: HashMap<u64, String>,
}

/// Bulk events are numbered per stream; a gap means the runtime dropped events (its buffer
/// was full), and a histogram built from the rest would silently undercount.
fn expect_index(next: &mut u32, got: u32, what: &str) -> Result<(), Error> {
    if got != *next {
        return Err(Error::Invalid(format!(
            "{what} event {got} arrived where {} was expected: the runtime dropped heap snapshot events (buffer full); retry, or raise the session buffer",
            *next
        )));
    }
    *next = next.wrapping_add(1);
    Ok(())
}

impl HeapSnapshotCollector {
    /// `with_graph` also keeps every object and reference (needed for retention paths; costs
    /// memory per object, so histograms alone skip it).
    pub fn new(with_graph: bool) -> Self {
        Self {
            phase: Phase::WaitingForGc,
            histogram: HeapHistogramBuilder::new(),
            graph: with_graph.then(ObjectGraphBuilder::new),
            nodes: 0,
            edges: 0,
            next_node_event: 0,
            next_edge_event: 0,
            error: None,
            type_names: HashMap::new(),
        }
    }

    /// Names types that this session may not announce: .NET Core 3.1 announces a type in the
    /// first heap snapshot session of a process only, so a later snapshot of the same process
    /// knows its types by id alone. `known` comes from an earlier snapshot of that process
    /// (type ids are MethodTable addresses, meaningless in another process); a name the
    /// session does announce wins.
    pub fn assume_type_names(&mut self, known: &HashMap<u64, String>) {
        for (&id, name) in known {
            self.histogram.add_type(id, name);
            if let Some(g) = self.graph.as_mut() {
                g.add_type(id, name);
            }
            self.type_names.entry(id).or_insert_with(|| name.clone());
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn on_event(&mut self, info: &TraceInfo, event: &Event<'_>) {
        if self.error.is_some() || event.metadata.provider != events::RUNTIME_PROVIDER {
            return;
        }
        match decode_runtime(event, info.pointer_size) {
            Ok(ev) => {
                if let Err(e) = self.apply(ev) {
                    self.error = Some(e);
                }
            }
            Err(e) => self.error = Some(e.into()),
        }
    }

    fn apply(&mut self, ev: RuntimeEvent<'_>) -> Result<(), Error> {
        match ev {
            // Types may be announced before the GC starts (type table) or during it.
            RuntimeEvent::BulkType(types) => {
                for t in types {
                    let t = t?;
                    let name = t.name.to_string_lossy();
                    self.histogram.add_type(t.type_id, &name);
                    if let Some(g) = self.graph.as_mut() {
                        g.add_type(t.type_id, &name);
                    }
                    self.type_names.insert(t.type_id, name);
                }
            }
            RuntimeEvent::GcStart { count, depth, reason, gc_type }
                if self.phase == Phase::WaitingForGc
                    && depth == 2
                    && reason == REASON_INDUCED
                    && gc_type == TYPE_NON_CONCURRENT =>
            {
                self.phase = Phase::InGc { count };
            }
            RuntimeEvent::GcEnd { count, .. } if self.phase == (Phase::InGc { count }) => {
                self.phase = Phase::Done;
            }
            RuntimeEvent::BulkNode(nodes) if matches!(self.phase, Phase::InGc { .. }) => {
                expect_index(&mut self.next_node_event, nodes.index, "GCBulkNode")?;
                for n in nodes {
                    let n = n?;
                    self.nodes += 1;
                    self.histogram.add_object(n.type_id, n.size);
                    if let Some(g) = self.graph.as_mut() {
                        g.add_node(n.address, n.size, n.type_id, n.edge_count);
                    }
                }
            }
            RuntimeEvent::BulkEdge(edges) if matches!(self.phase, Phase::InGc { .. }) => {
                expect_index(&mut self.next_edge_event, edges.index, "GCBulkEdge")?;
                for e in edges {
                    let e = e?;
                    self.edges += 1;
                    if let Some(g) = self.graph.as_mut() {
                        g.add_edge(e.target);
                    }
                }
            }
            RuntimeEvent::BulkRootEdge(roots) if matches!(self.phase, Phase::InGc { .. }) => {
                if let Some(g) = self.graph.as_mut() {
                    for r in roots {
                        let r = r?;
                        // Weak handles do not keep anything alive: from_gc_root skips them.
                        if let Some(kind) = RootKind::from_gc_root(r.root_kind, r.root_flags) {
                            g.add_root(r.rooted_node_address, kind);
                        }
                    }
                }
            }
            RuntimeEvent::BulkRootStaticVar(statics) if matches!(self.phase, Phase::InGc { .. }) => {
                if let Some(g) = self.graph.as_mut() {
                    for s in statics {
                        let s = s?;
                        // The event's type id is the type of the object in the field, not the
                        // type declaring it (the runtime logs `obj->GetTypeHandle()`): the
                        // declaring type is unknown here, and naming it after the value would
                        // read as `static System.EventHandler.Changed`.
                        let field_name = s.field_name.to_string_lossy();
                        g.add_root(s.object_id, RootKind::Static { type_name: String::new(), field_name });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn finish(self) -> Result<HeapSnapshot, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.phase != Phase::Done {
            return Err(Error::Invalid(match self.phase {
                Phase::WaitingForGc => "the runtime never ran the induced full GC of the heap snapshot".into(),
                _ => "the heap snapshot's GC did not finish before the stream ended".into(),
            }));
        }
        let graph = match self.graph {
            Some(g) => Some(g.finish()?),
            None => None,
        };
        Ok(HeapSnapshot {
            histogram: self.histogram.finish(),
            graph,
            nodes: self.nodes,
            edges: self.edges,
            type_names: self.type_names,
        })
    }
}

pub struct HeapSnapshot {
    pub histogram: HeapHistogram,
    pub graph: Option<ObjectGraph>,
    pub nodes: u64,
    pub edges: u64,
    /// Type names by id (raw, as announced or assumed), for a later snapshot of this process.
    pub type_names: HashMap<u64, String>,
}

/// Progress of a capture, for long heaps.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub bytes: u64,
    pub objects: u64,
    pub elapsed: Duration,
}

/// Take a heap snapshot. The raw stream goes to `raw` when given (a `.nettrace` file that
/// other tools can open). `progress` is called at most about once a second.
pub async fn capture(
    client: &DiagnosticsClient,
    with_graph: bool,
    raw: Option<Box<dyn std::io::Write + Send>>,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<HeapSnapshot, Error> {
    capture_named(client, with_graph, &HashMap::new(), raw, timeout, progress).await
}

/// [`capture`] of a process whose earlier snapshots announced `known` type names (see
/// [`HeapSnapshotCollector::assume_type_names`]): a later snapshot of a .NET Core 3.1 process
/// names its types only through them.
pub async fn capture_named(
    client: &DiagnosticsClient,
    with_graph: bool,
    known: &HashMap<u64, String>,
    raw: Option<Box<dyn std::io::Write + Send>>,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<HeapSnapshot, Error> {
    flush_type_cache(client).await?;
    let mut session = TraceSession::start(client, &session_config()).await?;
    if let Some(raw) = raw {
        session.tee_to(raw);
    }
    let mut collector = HeapSnapshotCollector::new(with_graph);
    collector.assume_type_names(known);
    let started = Instant::now();
    let mut last_report = started;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let more = {
            let mut sink = |info: &TraceInfo, ev: &Event<'_>| collector.on_event(info, ev);
            match tokio::time::timeout_at(deadline, session.pump(&mut sink)).await {
                Ok(r) => r?,
                Err(_) => {
                    let _ = session.stop().await;
                    return Err(Error::Timeout {
                        what: "the heap snapshot's GC to finish".into(),
                        seconds: timeout.as_secs_f64(),
                    });
                }
            }
        };
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(Progress {
                bytes: session.bytes_received(),
                objects: collector.nodes,
                elapsed: started.elapsed(),
            });
        }
        if collector.phase() == Phase::Done || !more {
            break;
        }
    }
    // The GC is over: stop, and read the rest so the runtime can close the session cleanly.
    let mut sink = |info: &TraceInfo, ev: &Event<'_>| collector.on_event(info, ev);
    session.finish(&mut sink, Duration::from_secs(30)).await?;
    progress(Progress { bytes: session.bytes_received(), objects: collector.nodes, elapsed: started.elapsed() });
    collector.finish()
}

/// The runtime logs each type once per provider session: a short throw-away session makes it
/// forget which types it already sent, so the snapshot session names all of them.
async fn flush_type_cache(client: &DiagnosticsClient) -> Result<(), Error> {
    let mut cfg = SessionConfig::new(vec![Provider::new(events::SAMPLE_PROFILER_PROVIDER, 0, 4)]);
    cfg.circular_buffer_mb = 4;
    let mut session = TraceSession::start(client, &cfg).await?;
    let mut sink = |_: &TraceInfo, _: &Event<'_>| {};
    session.finish(&mut sink, Duration::from_secs(10)).await
}
