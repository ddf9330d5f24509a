//! Typed decoders for native runtime events. Their metadata carries no field list, so the
//! layouts below are hard-coded from the runtime's event manifest, keyed by provider, event
//! id and version, with `win:Pointer` fields sized by the trace's pointer size.
//!
//! Strings in payloads are exposed as [`Utf16Str`] views (no allocation while decoding);
//! call [`Utf16Str::to_string_lossy`] or use `Display` when an owned `String` is needed.

mod contention;
mod exception;
mod gc;
mod loader;
mod text;

pub use exception::ExceptionThrown;
pub use gc::{
    BulkEdge, BulkEdgeIter, BulkNode, BulkNodeIter, BulkRootCwt, BulkRootCwtIter, BulkRootEdge, BulkRootEdgeIter,
    BulkRootStaticVar, BulkRootStaticVarIter, BulkType, BulkTypeIter, U64List,
};
pub use loader::{MethodEventKind, MethodInfo};
pub use text::Utf16Str;

use crate::{Error, Event};

pub const RUNTIME_PROVIDER: &str = "Microsoft-Windows-DotNETRuntime";
pub const RUNDOWN_PROVIDER: &str = "Microsoft-Windows-DotNETRuntimeRundown";
pub const SAMPLE_PROFILER_PROVIDER: &str = "Microsoft-DotNETCore-SampleProfiler";

/// Runtime provider keywords.
pub mod keywords {
    pub const GC: u64 = 0x1;
    pub const LOADER: u64 = 0x8;
    pub const JIT: u64 = 0x10;
    pub const NGEN: u64 = 0x20;
    pub const CONTENTION: u64 = 0x4000;
    pub const EXCEPTION: u64 = 0x8000;
    pub const TYPE: u64 = 0x80000;
    pub const GC_HEAP_DUMP: u64 = 0x100000;
    pub const GC_HEAP_COLLECT: u64 = 0x800000;
    pub const GC_HEAP_AND_TYPE_NAMES: u64 = 0x1000000;
    pub const STACK: u64 = 0x4000_0000;
    /// What dotnet-gcdump enables: GC | GCHeapCollect | GCHeapDump | GCHeapAndTypeNames | Type.
    pub const GC_HEAP_SNAPSHOT: u64 = GC | GC_HEAP_COLLECT | GC_HEAP_DUMP | GC_HEAP_AND_TYPE_NAMES | TYPE;
}
pub use keywords::*;

/// Event ids of the decoded events (runtime provider unless noted).
pub mod ids {
    pub const GC_START: u32 = 1;
    pub const GC_END: u32 = 2;
    pub const BULK_TYPE: u32 = 15;
    pub const GC_BULK_ROOT_EDGE: u32 = 16;
    pub const GC_BULK_ROOT_CWT: u32 = 17;
    pub const GC_BULK_NODE: u32 = 18;
    pub const GC_BULK_EDGE: u32 = 19;
    pub const GC_BULK_ROOT_STATIC_VAR: u32 = 38;
    pub const EXCEPTION_THROWN: u32 = 80;
    pub const CONTENTION_START: u32 = 81;
    pub const CONTENTION_LOCK_CREATED: u32 = 90;
    pub const CONTENTION_STOP: u32 = 91;
    pub const METHOD_DC_START_VERBOSE: u32 = 139;
    pub const METHOD_DC_END_VERBOSE: u32 = 140;
    pub const METHOD_LOAD_VERBOSE: u32 = 143;
    pub const METHOD_UNLOAD_VERBOSE: u32 = 144;
    pub const MODULE_DC_START: u32 = 149;
    pub const MODULE_DC_END: u32 = 150;
    pub const MODULE_LOAD: u32 = 152;
    /// Rundown provider.
    pub const RUNDOWN_METHOD_DC_START_VERBOSE: u32 = 143;
    /// Rundown provider.
    pub const RUNDOWN_METHOD_DC_END_VERBOSE: u32 = 144;
    /// Rundown provider.
    pub const RUNDOWN_MODULE_DC_START: u32 = 153;
    /// Rundown provider.
    pub const RUNDOWN_MODULE_DC_END: u32 = 154;
    /// SampleProfiler provider.
    pub const THREAD_SAMPLE: u32 = 0;
}

/// A decoded runtime event. `Other` is any event this module does not decode.
#[derive(Debug, Clone)]
pub enum RuntimeEvent<'a> {
    /// Id 81. Version 1 (.NET Core 3.x–7) has only flags; version 2 (.NET 8+) adds the lock,
    /// the object and the owner's OS thread id.
    ContentionStart {
        flags: u8,
        lock_id: Option<u64>,
        object_id: Option<u64>,
        owner_thread_id: Option<u64>,
    },
    /// Id 91. Version 1 adds the wait duration.
    ContentionStop {
        flags: u8,
        duration_ns: Option<f64>,
    },
    /// Id 80, version 1 (.NET Core 3.1 and .NET 8 alike): a managed exception was thrown (first
    /// chance). The throwing thread is `Event::thread_id` and its stack is `Event::stack`.
    ExceptionThrown(ExceptionThrown<'a>),
    /// Id 90 (.NET 8+).
    ContentionLockCreated {
        lock_id: u64,
        object_id: u64,
    },
    /// MethodLoadVerbose / MethodUnloadVerbose (runtime 143/144), MethodDCStartVerbose /
    /// MethodDCEndVerbose (runtime 139/140, rundown 143/144); see [`MethodInfo::kind`].
    MethodLoad(MethodInfo<'a>),
    /// ModuleLoad (runtime 152), ModuleDCStart/End (runtime 149/150, rundown 153/154).
    ModuleLoad {
        module_id: u64,
        assembly_id: u64,
        il_path: Utf16Str<'a>,
        native_path: Utf16Str<'a>,
    },
    /// Id 1. `depth` and `gc_type` are 0 for version 0 events.
    GcStart {
        count: u32,
        depth: u32,
        reason: u32,
        gc_type: u32,
    },
    /// Id 2.
    GcEnd {
        count: u32,
        depth: u32,
    },
    BulkType(BulkTypeIter<'a>),
    BulkNode(BulkNodeIter<'a>),
    BulkEdge(BulkEdgeIter<'a>),
    BulkRootEdge(BulkRootEdgeIter<'a>),
    BulkRootStaticVar(BulkRootStaticVarIter<'a>),
    BulkRootCwt(BulkRootCwtIter<'a>),
    /// SampleProfiler id 0: 0 error, 1 external (native/preemptive), 2 managed.
    /// The sampled thread is `Event::thread_id` and its stack is `Event::stack`.
    ThreadSample {
        kind: u32,
    },
    Other,
}

/// Decode a runtime, rundown or sample-profiler event. `pointer_size` is
/// [`crate::TraceInfo::pointer_size`]. Unknown events give `Ok(RuntimeEvent::Other)`;
/// payloads too short for their declared layout give `Err(Error::Malformed)` with an
/// offset into the payload.
pub fn decode_runtime<'a>(event: &Event<'a>, pointer_size: u32) -> Result<RuntimeEvent<'a>, Error> {
    let md = event.metadata;
    let p = event.payload;
    let ptr = if pointer_size == 4 { 4 } else { 8 };
    // Provider names differ in length, so these comparisons are cheap.
    match md.provider.as_str() {
        RUNTIME_PROVIDER => match md.event_id {
            ids::GC_START => gc::gc_start(p, md.version),
            ids::GC_END => gc::gc_end(p),
            ids::BULK_TYPE => gc::BulkTypeIter::new(p).map(RuntimeEvent::BulkType),
            ids::GC_BULK_ROOT_EDGE => gc::BulkRootEdgeIter::new(p, ptr).map(RuntimeEvent::BulkRootEdge),
            ids::GC_BULK_ROOT_CWT => gc::BulkRootCwtIter::new(p, ptr).map(RuntimeEvent::BulkRootCwt),
            ids::GC_BULK_NODE => gc::BulkNodeIter::new(p, ptr).map(RuntimeEvent::BulkNode),
            ids::GC_BULK_EDGE => gc::BulkEdgeIter::new(p, ptr).map(RuntimeEvent::BulkEdge),
            ids::GC_BULK_ROOT_STATIC_VAR => gc::BulkRootStaticVarIter::new(p).map(RuntimeEvent::BulkRootStaticVar),
            ids::EXCEPTION_THROWN => exception::thrown(p, md.version, ptr),
            ids::CONTENTION_START => contention::start(p, md.version, ptr),
            ids::CONTENTION_STOP => contention::stop(p, md.version),
            ids::CONTENTION_LOCK_CREATED => contention::lock_created(p, ptr),
            ids::METHOD_LOAD_VERBOSE => loader::method(p, MethodEventKind::Load),
            ids::METHOD_UNLOAD_VERBOSE => loader::method(p, MethodEventKind::Unload),
            ids::METHOD_DC_START_VERBOSE => loader::method(p, MethodEventKind::DcStart),
            ids::METHOD_DC_END_VERBOSE => loader::method(p, MethodEventKind::DcEnd),
            ids::MODULE_LOAD | ids::MODULE_DC_START | ids::MODULE_DC_END => loader::module(p),
            _ => Ok(RuntimeEvent::Other),
        },
        RUNDOWN_PROVIDER => match md.event_id {
            ids::RUNDOWN_METHOD_DC_START_VERBOSE => loader::method(p, MethodEventKind::DcStart),
            ids::RUNDOWN_METHOD_DC_END_VERBOSE => loader::method(p, MethodEventKind::DcEnd),
            ids::RUNDOWN_MODULE_DC_START | ids::RUNDOWN_MODULE_DC_END => loader::module(p),
            _ => Ok(RuntimeEvent::Other),
        },
        SAMPLE_PROFILER_PROVIDER => match md.event_id {
            ids::THREAD_SAMPLE => {
                let b = p.get(..4).ok_or(Error::malformed(0, "ThreadSample payload shorter than 4 bytes"))?;
                Ok(RuntimeEvent::ThreadSample { kind: u32::from_le_bytes([b[0], b[1], b[2], b[3]]) })
            }
            _ => Ok(RuntimeEvent::Other),
        },
        _ => Ok(RuntimeEvent::Other),
    }
}
