//! GC events: start/end and the bulk heap-snapshot events (`GCHeapDump` keyword).
//!
//! Bulk iterators yield `Result` items. Fixed-stride events are validated once up front:
//! all complete items are yielded, and if the payload is shorter than `count` items the
//! iterator then yields one `Err` and ends. Variable-length iterators (BulkType,
//! RootStaticVar) yield `Err` at the first malformed item and end. No iterator yields
//! more than `count` items or panics.

use std::slice::ChunksExact;

use super::{RuntimeEvent, Utf16Str};
use crate::Error;
use crate::cursor::Cursor;

pub(super) fn gc_start(p: &[u8], version: u32) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    let count = c.u32("GCStart Count")?;
    if version == 0 {
        let reason = c.u32("GCStart Reason")?;
        return Ok(RuntimeEvent::GcStart { count, depth: 0, reason, gc_type: 0 });
    }
    Ok(RuntimeEvent::GcStart {
        count,
        depth: c.u32("GCStart Depth")?,
        reason: c.u32("GCStart Reason")?,
        gc_type: c.u32("GCStart Type")?,
    })
}

pub(super) fn gc_end(p: &[u8]) -> Result<RuntimeEvent<'_>, Error> {
    let mut c = Cursor::new(p, 0);
    Ok(RuntimeEvent::GcEnd { count: c.u32("GCEnd Count")?, depth: c.u32("GCEnd Depth")? })
}

#[inline(always)]
fn rd_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline(always)]
fn rd_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[inline(always)]
fn rd_ptr(b: &[u8], at: usize, ptr: usize) -> u64 {
    if ptr == 4 { u64::from(rd_u32(b, at)) } else { rd_u64(b, at) }
}

/// `u32 Index, u32 Count, u16 ClrInstanceID` header of node/edge/root/CWT events.
fn indexed_header(p: &[u8], what: &'static str) -> Result<(u32, u32, u16), Error> {
    let mut c = Cursor::new(p, 0);
    Ok((c.u32(what)?, c.u32(what)?, c.u16(what)?))
}

/// Fixed-stride item walker shared by the fixed-layout bulk iterators.
#[derive(Clone)]
struct Fixed<'a> {
    chunks: ChunksExact<'a, u8>,
    /// Set when the payload holds fewer than `count` items: the payload offset where the
    /// first missing item should have started.
    short_at: Option<u64>,
}

impl<'a> Fixed<'a> {
    fn new(p: &'a [u8], header: usize, count: u32, stride: usize) -> Self {
        let values = p.get(header..).unwrap_or(&[]);
        let available = values.len() / stride;
        let take = available.min(count as usize);
        let short_at = (take < count as usize).then(|| (header + take * stride) as u64);
        Fixed { chunks: values[..take * stride].chunks_exact(stride), short_at }
    }

    #[inline]
    fn next(&mut self, what: &'static str) -> Option<Result<&'a [u8], Error>> {
        match self.chunks.next() {
            Some(ch) => Some(Ok(ch)),
            None => self.short_at.take().map(|at| Err(Error::malformed(at, what))),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.chunks.len();
        (n, Some(n + usize::from(self.short_at.is_some())))
    }
}

macro_rules! fixed_iter {
    ($iter:ident, $item:ident, $what:literal, $stride:expr, $decode:expr) => {
        impl<'a> $iter<'a> {
            pub(super) fn new(p: &'a [u8], ptr: u32) -> Result<Self, Error> {
                let (index, count, clr_instance_id) = indexed_header(p, concat!($what, " header"))?;
                let ptr = ptr as usize;
                let stride: usize = $stride(ptr);
                Ok($iter { index, count, clr_instance_id, ptr, items: Fixed::new(p, 10, count, stride) })
            }
        }

        impl Iterator for $iter<'_> {
            type Item = Result<$item, Error>;

            #[inline]
            fn next(&mut self) -> Option<Self::Item> {
                let ptr = self.ptr;
                self.items.next(concat!($what, " payload shorter than Count items")).map(|r| r.map(|b| $decode(b, ptr)))
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                self.items.size_hint()
            }
        }
    };
}

/// One object of the heap snapshot (GCBulkNode, id 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkNode {
    pub address: u64,
    pub size: u64,
    /// Joins with [`BulkType::type_id`] (the MethodTable address).
    pub type_id: u64,
    /// How many of the next targets in the concatenated edge stream belong to this node.
    pub edge_count: u64,
}

/// Items of a GCBulkNode event; `index` numbers node events from 0 within one dump.
#[derive(Clone)]
pub struct BulkNodeIter<'a> {
    pub index: u32,
    pub count: u32,
    pub clr_instance_id: u16,
    ptr: usize,
    items: Fixed<'a>,
}

fixed_iter!(BulkNodeIter, BulkNode, "GCBulkNode", |ptr| ptr + 24, |b: &[u8], ptr| {
    BulkNode {
        address: rd_ptr(b, 0, ptr),
        size: rd_u64(b, ptr),
        type_id: rd_u64(b, ptr + 8),
        edge_count: rd_u64(b, ptr + 16),
    }
});

/// One reference of the heap snapshot (GCBulkEdge, id 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkEdge {
    /// Address of the referenced object.
    pub target: u64,
    /// Always 0 in current runtimes.
    pub referencing_field_id: u32,
}

/// Items of a GCBulkEdge event; edge events form their own stream numbered by `index`.
#[derive(Clone)]
pub struct BulkEdgeIter<'a> {
    pub index: u32,
    pub count: u32,
    pub clr_instance_id: u16,
    ptr: usize,
    items: Fixed<'a>,
}

fixed_iter!(BulkEdgeIter, BulkEdge, "GCBulkEdge", |ptr| ptr + 4, |b: &[u8], ptr| {
    BulkEdge { target: rd_ptr(b, 0, ptr), referencing_field_id: rd_u32(b, ptr) }
});

/// One GC root (GCBulkRootEdge, id 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRootEdge {
    pub rooted_node_address: u64,
    /// Stack 0, Finalizer 1, Handle 2, Older 3, SizedRef 4, Overflow 5.
    pub root_kind: u8,
    /// Pinning 0x1, WeakRef 0x2, Interior 0x4, RefCounted 0x8.
    pub root_flags: u32,
    pub root_id: u64,
}

#[derive(Clone)]
pub struct BulkRootEdgeIter<'a> {
    pub index: u32,
    pub count: u32,
    pub clr_instance_id: u16,
    ptr: usize,
    items: Fixed<'a>,
}

fixed_iter!(BulkRootEdgeIter, BulkRootEdge, "GCBulkRootEdge", |ptr| 2 * ptr + 5, |b: &[u8], ptr| {
    BulkRootEdge {
        rooted_node_address: rd_ptr(b, 0, ptr),
        root_kind: b[ptr],
        root_flags: rd_u32(b, ptr + 1),
        root_id: rd_ptr(b, ptr + 5, ptr),
    }
});

/// A ConditionalWeakTable dependent-handle edge (id 17): key keeps value alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRootCwt {
    pub key_node_id: u64,
    pub value_node_id: u64,
    pub root_id: u64,
}

#[derive(Clone)]
pub struct BulkRootCwtIter<'a> {
    pub index: u32,
    pub count: u32,
    pub clr_instance_id: u16,
    ptr: usize,
    items: Fixed<'a>,
}

fixed_iter!(
    BulkRootCwtIter,
    BulkRootCwt,
    "GCBulkRootConditionalWeakTableElementEdge",
    |ptr| 3 * ptr,
    |b: &[u8], ptr| {
        BulkRootCwt {
            key_node_id: rd_ptr(b, 0, ptr),
            value_node_id: rd_ptr(b, ptr, ptr),
            root_id: rd_ptr(b, 2 * ptr, ptr),
        }
    }
);

/// A list of u64 values inside a payload (BulkType type parameters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct U64List<'a> {
    bytes: &'a [u8],
}

impl<'a> U64List<'a> {
    pub fn len(&self) -> usize {
        self.bytes.len() / 8
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<u64> {
        let at = i.checked_mul(8)?;
        (at + 8 <= self.bytes.len()).then(|| rd_u64(self.bytes, at))
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        self.bytes.chunks_exact(8).map(|b| rd_u64(b, 0))
    }
}

/// One type description (BulkType, id 15).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkType<'a> {
    pub type_id: u64,
    pub module_id: u64,
    pub type_name_id: u32,
    /// Delegate 0x1, Finalizable 0x2, ComObject 0x4, Array 0x8, rank bits 0x100–0x800.
    pub flags: u32,
    pub cor_element_type: u8,
    /// Full type name, e.g. `DiagScenarios.Customer`; may be empty.
    pub name: Utf16Str<'a>,
    pub type_parameters: U64List<'a>,
}

/// Items of a BulkType event (no `index` field in this event).
#[derive(Clone)]
pub struct BulkTypeIter<'a> {
    pub count: u32,
    pub clr_instance_id: u16,
    cursor: Cursor<'a>,
    left: u32,
}

impl<'a> BulkTypeIter<'a> {
    pub(super) fn new(p: &'a [u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(p, 0);
        let count = c.u32("BulkType header")?;
        let clr_instance_id = c.u16("BulkType header")?;
        Ok(BulkTypeIter { count, clr_instance_id, cursor: c, left: count })
    }

    fn item(c: &mut Cursor<'a>) -> Result<BulkType<'a>, Error> {
        let type_id = c.u64("BulkType TypeID")?;
        let module_id = c.u64("BulkType ModuleID")?;
        let type_name_id = c.u32("BulkType TypeNameID")?;
        let flags = c.u32("BulkType Flags")?;
        let cor_element_type = c.u8("BulkType CorElementType")?;
        let name = Utf16Str::from_bytes(c.utf16z("BulkType Name")?);
        let n = c.u32("BulkType TypeParameterCount")? as usize;
        let bytes = n.checked_mul(8).ok_or_else(|| c.err("BulkType TypeParameters"))?;
        let params = c.bytes(bytes, "BulkType TypeParameters")?;
        Ok(BulkType {
            type_id,
            module_id,
            type_name_id,
            flags,
            cor_element_type,
            name,
            type_parameters: U64List { bytes: params },
        })
    }
}

impl<'a> Iterator for BulkTypeIter<'a> {
    type Item = Result<BulkType<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let r = Self::item(&mut self.cursor);
        // Stop after an error: the next item's start is unknown.
        self.left = if r.is_ok() { self.left - 1 } else { 0 };
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// A static field holding an object (GCBulkRootStaticVar, id 38).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkRootStaticVar<'a> {
    pub root_id: u64,
    pub object_id: u64,
    /// Type declaring the static field.
    pub type_id: u64,
    pub flags: u32,
    pub field_name: Utf16Str<'a>,
}

/// Items of a GCBulkRootStaticVar event (no `index` field; has the AppDomain id).
#[derive(Clone)]
pub struct BulkRootStaticVarIter<'a> {
    pub count: u32,
    pub app_domain_id: u64,
    pub clr_instance_id: u16,
    cursor: Cursor<'a>,
    left: u32,
}

impl<'a> BulkRootStaticVarIter<'a> {
    pub(super) fn new(p: &'a [u8]) -> Result<Self, Error> {
        let mut c = Cursor::new(p, 0);
        let count = c.u32("GCBulkRootStaticVar header")?;
        let app_domain_id = c.u64("GCBulkRootStaticVar header")?;
        let clr_instance_id = c.u16("GCBulkRootStaticVar header")?;
        Ok(BulkRootStaticVarIter { count, app_domain_id, clr_instance_id, cursor: c, left: count })
    }

    fn item(c: &mut Cursor<'a>) -> Result<BulkRootStaticVar<'a>, Error> {
        Ok(BulkRootStaticVar {
            root_id: c.u64("GCBulkRootStaticVar GCRootID")?,
            object_id: c.u64("GCBulkRootStaticVar ObjectID")?,
            type_id: c.u64("GCBulkRootStaticVar TypeID")?,
            flags: c.u32("GCBulkRootStaticVar Flags")?,
            field_name: Utf16Str::from_bytes(c.utf16z("GCBulkRootStaticVar FieldName")?),
        })
    }
}

impl<'a> Iterator for BulkRootStaticVarIter<'a> {
    type Item = Result<BulkRootStaticVar<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let r = Self::item(&mut self.cursor);
        self.left = if r.is_ok() { self.left - 1 } else { 0 };
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

impl std::fmt::Debug for BulkNodeIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkNodeIter").field("index", &self.index).field("count", &self.count).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BulkEdgeIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkEdgeIter").field("index", &self.index).field("count", &self.count).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BulkRootEdgeIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkRootEdgeIter")
            .field("index", &self.index)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BulkRootCwtIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkRootCwtIter")
            .field("index", &self.index)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BulkTypeIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkTypeIter").field("count", &self.count).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BulkRootStaticVarIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkRootStaticVarIter").field("count", &self.count).finish_non_exhaustive()
    }
}
