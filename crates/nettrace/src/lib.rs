//! Streaming, sans-IO reader for .NET EventPipe *nettrace* streams (format V4 and its V5
//! metadata extensions), plus typed decoders for the runtime events dumpwatch needs.
//!
//! * [`Reader`] takes bytes in any chunking ([`Reader::feed`]) and yields one object per
//!   [`Reader::next_block`] call, invoking a callback for every event. No I/O, no async.
//! * [`events::decode_runtime`] decodes native runtime events (GC heap snapshot, contention,
//!   method/module load, sample profiler), whose metadata carries no field descriptions.
//! * [`payload::decode_fields`] decodes self-describing EventSource payloads from their
//!   metadata, and [`counters::decode_counter`] builds on it for `EventCounters`.
//!
//! Events are delivered in stream order. The runtime only orders events per capture
//! thread; sort by timestamp between sequence points if a global order matters.
//!
//! V6 streams are recognised and refused with [`Error::UnsupportedVersion`].
//!
//! ```
//! use nettrace::events::{RuntimeEvent, decode_runtime};
//! use nettrace::{Reader, Step};
//! # let bytes = nettrace::testing::TraceWriter::default().finish();
//! let mut reader = Reader::new();
//! reader.feed(&bytes); // any chunking works; feed more whenever NeedData comes back
//! reader.finish_input();
//! loop {
//!     let pointer_size = reader.trace_info().map_or(8, |t| t.pointer_size);
//!     let step = reader.next_block(&mut |event| {
//!         if let Ok(RuntimeEvent::BulkNode(nodes)) = decode_runtime(event, pointer_size) {
//!             for node in nodes.flatten() {
//!                 let _ = (node.address, node.type_id, node.size);
//!             }
//!         }
//!     })?;
//!     match step {
//!         Step::Block => continue,
//!         Step::End => break,
//!         Step::NeedData => unreachable!("all input was fed"),
//!     }
//! }
//! # Ok::<(), nettrace::Error>(())
//! ```

mod block;
pub mod counters;
mod cursor;
mod error;
pub mod events;
mod framing;
mod metadata;
pub mod payload;
mod reader;
mod sequence;
mod stack;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::Error;
pub use metadata::{EventMetadata, FieldMetadata, TypeCode};
pub use reader::{Limits, Reader, ReaderStats, Step, read_from};

/// Contents of the Trace object at the start of every stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceInfo {
    /// SYSTEMTIME of the sync point: year, month, day of week, day, hour, minute, second, ms.
    pub sync_time_utc: [i16; 8],
    /// QPC timestamp taken at `sync_time_utc`.
    pub sync_time_qpc: i64,
    /// Ticks per second of every event timestamp.
    pub qpc_frequency: i64,
    /// 4 or 8: the width of stack IPs and of `win:Pointer` payload fields.
    pub pointer_size: u32,
    pub process_id: u32,
    pub number_of_processors: u32,
    pub expected_cpu_sampling_rate: u32,
}

/// One event, borrowed from the reader's buffers for the duration of the callback.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub metadata: &'a EventMetadata,
    /// Per capture thread, counting from 1; gaps mean dropped events.
    pub sequence_number: u32,
    /// The thread the event is about (the sampled thread for SampleProfiler), OS id.
    pub thread_id: u64,
    /// The thread that wrote the event.
    pub capture_thread_id: u64,
    pub processor_number: u32,
    /// 0 when the event has no stack.
    pub stack_id: u32,
    /// Instruction pointers, leaf first; empty when the event has no (resolvable) stack.
    pub stack: &'a [u64],
    /// QPC ticks; see [`TraceInfo::qpc_frequency`].
    pub timestamp: i64,
    pub activity_id: [u8; 16],
    pub related_activity_id: [u8; 16],
    pub payload: &'a [u8],
}
