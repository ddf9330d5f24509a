//! What the DAC worker extracts from a dump: plain data, serializable across the pipe.

use serde::{Deserialize, Serialize};

/// How much the worker should extract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Depth {
    /// Threads, stacks, sync blocks and the per-type histogram.
    Histogram,
    /// Everything above plus every object's references and the GC roots.
    Graph,
}

/// A managed thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// Kernel thread id (0 for threads that never started or have died).
    pub os_id: u32,
    /// `Thread.ManagedThreadId`.
    pub managed_id: u32,
    /// TS_* state flags.
    pub state: u32,
    /// The runtime's lock count; `None` where the DAC reports garbage (0xFFFFFFFF on 8.0).
    pub lock_count: Option<u32>,
    /// The runtime's `Thread*`.
    pub address: u64,
    /// Started and not dead.
    pub alive: bool,
    /// Managed stack, innermost first, symbolized.
    pub frames: Vec<Frame>,
    /// Stack references to objects whose monitor is held (candidates for "waits on").
    pub lock_refs: Vec<LockRef>,
    /// Type of the exception this thread threw last (the runtime's last-thrown-object handle),
    /// caught or not: on a crash dump, the crashing thread's is the unhandled one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exception: Option<String>,
}

/// One frame of a managed stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// `Namespace.Type.Method(Args)`, or `[FrameName] Method` for runtime frames.
    pub name: String,
    /// A runtime (clr!Frame) frame rather than JIT-compiled code.
    pub runtime: bool,
}

/// A stack reference to a locked object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRef {
    /// The locked object.
    pub object: u64,
    /// Reported by a runtime frame (e.g. `HelperMethodFrame_1OBJ` of `Monitor.Enter`),
    /// which is what a thread blocked in `lock` shows for the object it waits on.
    pub from_runtime_frame: bool,
}

/// An in-use sync block (a Monitor with an owner or waiters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBlock {
    /// Index in the sync block table.
    pub index: u32,
    /// The runtime's SyncBlock address (the lock's identity).
    pub address: u64,
    /// The locked object.
    pub object: u64,
    /// Its type.
    pub object_type: String,
    /// Held: bit 0 of MonitorHeld.
    pub held: bool,
    /// OS tid of the holder, if held and known.
    pub owner_os_id: Option<u32>,
    /// Managed id of the holder.
    pub owner_managed_id: Option<u32>,
    /// Recursion count.
    pub recursion: u32,
    /// Threads blocked entering: MonitorHeld >> 1.
    pub waiters: u32,
}

/// Per-type totals of the heap walk (`dumpheap -stat`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapType {
    /// MethodTable address.
    pub method_table: u64,
    /// Type name as the DAC prints it.
    pub name: String,
    /// Objects.
    pub count: u64,
    /// Bytes (object sizes as the GC sees them).
    pub bytes: u64,
}

/// A GC root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRoot {
    /// The rooted object.
    pub object: u64,
    /// Why.
    pub kind: RootSource,
}

/// Where a root comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// A static field (the usual holder of a leak).
    Static {
        /// Declaring type (DAC name).
        type_name: String,
        /// Field name.
        field_name: String,
    },
    /// Strong handle.
    StrongHandle,
    /// Pinned or async-pinned handle (statics live in arrays held by these).
    PinnedHandle,
    /// Ref-counted / sized-ref handle.
    OtherHandle,
    /// A stack slot or register of thread `os_id`.
    Stack {
        /// The thread.
        os_id: u32,
    },
    /// Ready for finalization: dead, waiting for the finalizer thread.
    Finalizer,
}

/// Heap walk figures besides the histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapStats {
    /// Server GC.
    pub server_gc: bool,
    /// Regions (.NET 7+) rather than segments.
    pub regions: bool,
    /// The GC said its structures were valid when the dump was taken (not mid-GC).
    pub structures_valid: bool,
    /// Segments or regions walked.
    pub segments: u64,
    /// Objects (free space excluded).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Free-space objects and their bytes.
    pub free_objects: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Heap bytes the walk read from the dump (segment ranges).
    pub walked_bytes: u64,
    /// Places where the walk had to resynchronize (bad MethodTable); 0 on a healthy dump.
    pub resyncs: u64,
    /// The `[start, end)` object ranges walked (to measure the read floor).
    pub ranges: Vec<[u64; 2]>,
}

/// Everything but the object graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The runtime's `@(#)Version` (e.g. `8.0.424.16909`).
    pub runtime_version: Option<String>,
    /// `IXCLRDataProcess` revision.
    pub dac_revision: u32,
    /// Managed threads.
    pub threads: Vec<Thread>,
    /// Sync blocks that are held or have waiters.
    pub sync_blocks: Vec<SyncBlock>,
    /// Heap walk figures.
    pub heap: HeapStats,
    /// Per-type histogram, every type seen (graph type indexes point here).
    pub types: Vec<HeapType>,
    /// GC roots (empty at [`Depth::Histogram`]).
    pub roots: Vec<GcRoot>,
    /// OS id of the runtime's finalizer thread, if it is running.
    #[serde(default)]
    pub finalizer_thread: Option<u32>,
    /// Non-fatal problems met on the way.
    pub warnings: Vec<String>,
    /// At [`Depth::Graph`]: what each `System.Threading.TimerCallback` calls, per method (its
    /// full name) the delegates' addresses.
    #[serde(default)]
    pub timer_callbacks: Vec<(String, Vec<u64>)>,
    /// At [`Depth::Graph`]: what the parent needs to walk the heap again for the object graph.
    #[serde(default)]
    pub layout: Option<crate::heapwalk::HeapLayout>,
    /// Where the worker spent its time (`analyze --timings`).
    #[serde(default)]
    pub phases: Vec<crate::timings::PhaseTime>,
}
