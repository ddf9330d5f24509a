//! Payload builders for runtime events and EventCounters, matching the layouts the
//! decoders in [`crate::events`] and [`crate::counters`] expect.

use crate::events::{BulkEdge, BulkNode, BulkRootCwt, BulkRootEdge};
use crate::{EventMetadata, FieldMetadata, TypeCode};

/// Little-endian payload builder.
#[derive(Debug, Clone, Default)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    pub fn new() -> Self {
        Payload(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f32(mut self, v: f32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(mut self, v: f64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `win:Pointer` of `pointer_size` bytes.
    pub fn ptr(self, pointer_size: u32, v: u64) -> Self {
        if pointer_size == 4 { self.u32(v as u32) } else { self.u64(v) }
    }
    /// NUL-terminated UTF-16LE.
    pub fn utf16z(mut self, s: &str) -> Self {
        for u in s.encode_utf16() {
            self.0.extend_from_slice(&u.to_le_bytes());
        }
        self.0.extend_from_slice(&[0, 0]);
        self
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

const CLR: u16 = 0;

/// GCStart_V2.
pub fn gc_start(count: u32, depth: u32, reason: u32, gc_type: u32) -> Vec<u8> {
    Payload::new().u32(count).u32(depth).u32(reason).u32(gc_type).u16(CLR).u64(0).build()
}

/// GCEnd_V1.
pub fn gc_end(count: u32, depth: u32) -> Vec<u8> {
    Payload::new().u32(count).u32(depth).u16(CLR).build()
}

/// GCBulkNode.
pub fn bulk_node(index: u32, pointer_size: u32, nodes: &[BulkNode]) -> Vec<u8> {
    let mut p = Payload::new().u32(index).u32(nodes.len() as u32).u16(CLR);
    for n in nodes {
        p = p.ptr(pointer_size, n.address).u64(n.size).u64(n.type_id).u64(n.edge_count);
    }
    p.build()
}

/// GCBulkEdge.
pub fn bulk_edge(index: u32, pointer_size: u32, edges: &[BulkEdge]) -> Vec<u8> {
    let mut p = Payload::new().u32(index).u32(edges.len() as u32).u16(CLR);
    for e in edges {
        p = p.ptr(pointer_size, e.target).u32(e.referencing_field_id);
    }
    p.build()
}

/// GCBulkRootEdge.
pub fn bulk_root_edge(index: u32, pointer_size: u32, roots: &[BulkRootEdge]) -> Vec<u8> {
    let mut p = Payload::new().u32(index).u32(roots.len() as u32).u16(CLR);
    for r in roots {
        p = p.ptr(pointer_size, r.rooted_node_address).u8(r.root_kind).u32(r.root_flags).ptr(pointer_size, r.root_id);
    }
    p.build()
}

/// GCBulkRootConditionalWeakTableElementEdge.
pub fn bulk_root_cwt(index: u32, pointer_size: u32, items: &[BulkRootCwt]) -> Vec<u8> {
    let mut p = Payload::new().u32(index).u32(items.len() as u32).u16(CLR);
    for i in items {
        p = p.ptr(pointer_size, i.key_node_id).ptr(pointer_size, i.value_node_id).ptr(pointer_size, i.root_id);
    }
    p.build()
}

/// An owned BulkType item for building payloads.
#[derive(Debug, Clone, Default)]
pub struct TypeSpec {
    pub type_id: u64,
    pub module_id: u64,
    pub type_name_id: u32,
    pub flags: u32,
    pub cor_element_type: u8,
    pub name: String,
    pub type_parameters: Vec<u64>,
}

/// BulkType.
pub fn bulk_type(types: &[TypeSpec]) -> Vec<u8> {
    let mut p = Payload::new().u32(types.len() as u32).u16(CLR);
    for t in types {
        p = p
            .u64(t.type_id)
            .u64(t.module_id)
            .u32(t.type_name_id)
            .u32(t.flags)
            .u8(t.cor_element_type)
            .utf16z(&t.name)
            .u32(t.type_parameters.len() as u32);
        for tp in &t.type_parameters {
            p = p.u64(*tp);
        }
    }
    p.build()
}

/// An owned GCBulkRootStaticVar item.
#[derive(Debug, Clone, Default)]
pub struct StaticVarSpec {
    pub root_id: u64,
    pub object_id: u64,
    pub type_id: u64,
    pub flags: u32,
    pub field_name: String,
}

/// GCBulkRootStaticVar.
pub fn bulk_root_static_var(app_domain_id: u64, vars: &[StaticVarSpec]) -> Vec<u8> {
    let mut p = Payload::new().u32(vars.len() as u32).u64(app_domain_id).u16(CLR);
    for v in vars {
        p = p.u64(v.root_id).u64(v.object_id).u64(v.type_id).u32(v.flags).utf16z(&v.field_name);
    }
    p.build()
}

/// ContentionStart_V2 (27 bytes with 8-byte pointers).
pub fn contention_start_v2(pointer_size: u32, flags: u8, lock_id: u64, object_id: u64, owner: u64) -> Vec<u8> {
    Payload::new().u8(flags).u16(CLR).ptr(pointer_size, lock_id).ptr(pointer_size, object_id).u64(owner).build()
}

/// ExceptionThrown_V1.
pub fn exception_thrown_v1(
    pointer_size: u32,
    exception_type: &str,
    message: &str,
    ip: u64,
    hresult: u32,
    flags: u16,
) -> Vec<u8> {
    Payload::new().utf16z(exception_type).utf16z(message).ptr(pointer_size, ip).u32(hresult).u16(flags).u16(CLR).build()
}

/// ContentionStart_V1.
pub fn contention_start_v1(flags: u8) -> Vec<u8> {
    Payload::new().u8(flags).u16(CLR).build()
}

/// ContentionStop_V1.
pub fn contention_stop_v1(flags: u8, duration_ns: f64) -> Vec<u8> {
    Payload::new().u8(flags).u16(CLR).f64(duration_ns).build()
}

/// ContentionLockCreated.
pub fn contention_lock_created(pointer_size: u32, lock_id: u64, object_id: u64) -> Vec<u8> {
    Payload::new().ptr(pointer_size, lock_id).ptr(pointer_size, object_id).u16(CLR).build()
}

/// An owned method description for MethodLoadVerbose / MethodDC*Verbose payloads.
#[derive(Debug, Clone, Default)]
pub struct MethodSpec {
    pub method_id: u64,
    pub module_id: u64,
    pub start_address: u64,
    pub size: u32,
    pub token: u32,
    pub flags: u32,
    pub namespace: String,
    pub name: String,
    pub signature: String,
}

/// MethodLoadUnloadVerbose_V1 / rundown V1 (with ClrInstanceID, without ReJITID).
pub fn method_verbose(m: &MethodSpec) -> Vec<u8> {
    Payload::new()
        .u64(m.method_id)
        .u64(m.module_id)
        .u64(m.start_address)
        .u32(m.size)
        .u32(m.token)
        .u32(m.flags)
        .utf16z(&m.namespace)
        .utf16z(&m.name)
        .utf16z(&m.signature)
        .u16(CLR)
        .build()
}

/// ModuleLoad_V2 / ModuleDCEnd_V2 prefix (PDB fields zeroed).
pub fn module_load(module_id: u64, assembly_id: u64, il_path: &str, native_path: &str) -> Vec<u8> {
    Payload::new()
        .u64(module_id)
        .u64(assembly_id)
        .u32(0)
        .u32(0)
        .utf16z(il_path)
        .utf16z(native_path)
        .u16(CLR)
        .bytes(&[0; 16])
        .u32(0)
        .utf16z("")
        .bytes(&[0; 16])
        .u32(0)
        .utf16z("")
        .build()
}

/// SampleProfiler ThreadSample.
pub fn thread_sample(kind: u32) -> Vec<u8> {
    Payload::new().u32(kind).build()
}

fn s(name: &str) -> FieldMetadata {
    FieldMetadata::scalar(name, TypeCode::String)
}

/// Metadata of an `EventCounters` event as EventSource describes a Mean counter payload.
pub fn counters_metadata_mean(metadata_id: u32, provider: &str) -> EventMetadata {
    let nested = vec![
        s("Name"),
        s("DisplayName"),
        FieldMetadata::scalar("Mean", TypeCode::Double),
        FieldMetadata::scalar("StandardDeviation", TypeCode::Double),
        FieldMetadata::scalar("Count", TypeCode::Int32),
        FieldMetadata::scalar("Min", TypeCode::Double),
        FieldMetadata::scalar("Max", TypeCode::Double),
        FieldMetadata::scalar("IntervalSec", TypeCode::Single),
        s("Series"),
        s("CounterType"),
        s("Metadata"),
        s("DisplayUnits"),
    ];
    counters_metadata(metadata_id, provider, nested)
}

/// Metadata of an `EventCounters` event for a Sum (incrementing) counter payload.
pub fn counters_metadata_sum(metadata_id: u32, provider: &str) -> EventMetadata {
    let nested = vec![
        s("Name"),
        s("DisplayName"),
        s("DisplayRateTimeScale"),
        FieldMetadata::scalar("Increment", TypeCode::Double),
        FieldMetadata::scalar("IntervalSec", TypeCode::Single),
        s("Metadata"),
        s("Series"),
        s("CounterType"),
        s("DisplayUnits"),
    ];
    counters_metadata(metadata_id, provider, nested)
}

fn counters_metadata(metadata_id: u32, provider: &str, nested: Vec<FieldMetadata>) -> EventMetadata {
    EventMetadata {
        metadata_id,
        provider: provider.to_string(),
        event_id: 1,
        event_name: crate::counters::EVENT_COUNTERS.to_string(),
        keywords: 0,
        version: 0,
        level: 4,
        opcode: None,
        // The shape real runtimes send: an unnamed event-level object around `Payload`.
        fields: vec![FieldMetadata {
            name: String::new(),
            type_code: TypeCode::Object,
            nested: vec![FieldMetadata {
                name: "Payload".to_string(),
                type_code: TypeCode::Object,
                nested,
                element: None,
            }],
            element: None,
        }],
    }
}

/// Payload matching [`counters_metadata_mean`].
pub fn counter_mean(name: &str, display: &str, units: &str, mean: f64, interval: f32) -> Vec<u8> {
    Payload::new()
        .utf16z(name)
        .utf16z(display)
        .f64(mean)
        .f64(0.0)
        .i32(1)
        .f64(mean)
        .f64(mean)
        .f32(interval)
        .utf16z(&format!("Interval={}", (interval * 1000.0) as u32))
        .utf16z("Mean")
        .utf16z("")
        .utf16z(units)
        .build()
}

/// Payload matching [`counters_metadata_sum`].
pub fn counter_sum(name: &str, display: &str, units: &str, increment: f64, interval: f32) -> Vec<u8> {
    Payload::new()
        .utf16z(name)
        .utf16z(display)
        .utf16z("00:00:01")
        .f64(increment)
        .f32(interval)
        .utf16z("")
        .utf16z(&format!("Interval={}", (interval * 1000.0) as u32))
        .utf16z("Sum")
        .utf16z(units)
        .build()
}
