//! The object graph of a GC heap snapshot, in compressed sparse row form.
//!
//! A snapshot of a leaking service easily has tens of millions of objects, so the graph
//! stores per object only its address, size, type index and edge offset (20 bytes) and
//! 4 bytes per reference, with nodes sorted by address so lookups need no hash map. The
//! builder holds 20 bytes per object and 8 per reference, and when objects arrive in address
//! order (a dump's heap walk) it finishes without reordering anything.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::histogram::{HeapHistogram, HeapHistogramBuilder};
use super::type_name::{clean_type_name, unknown_type_name};
use crate::phases::Phases;
use crate::{Error, HeapStream, Result};

mod slots;
pub use slots::NodeSlots;

/// Position of an object in an [`ObjectGraph`] (objects are numbered by address order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeIndex(pub u32);

impl NodeIndex {
    /// As a `usize`, for indexing.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why the GC keeps an object alive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootKind {
    /// A static field: the usual holder of a leak.
    Static {
        /// Declaring type, cleaned; empty when unknown (heap snapshots: `GCBulkRootStaticVar`
        /// names the field and the type of its value, not the declaring type).
        type_name: String,
        /// Field name.
        field_name: String,
    },
    /// A strong GC handle.
    StrongHandle,
    /// A pinning GC handle.
    PinnedHandle,
    /// Any other root (dependent / ref-counted / sized-ref handles, overflow, …).
    Other,
    /// The finalization queue.
    Finalizer,
    /// A local variable or register of a running method.
    Stack,
}

impl RootKind {
    /// Maps a `GCBulkRootEdge` kind and flags the way dotnet-gcdump buckets them. Weak
    /// references do not keep anything alive, so they give `None`.
    pub fn from_gc_root(kind: u8, flags: u32) -> Option<RootKind> {
        const PINNING: u32 = 0x1;
        const WEAK_REF: u32 = 0x2;
        const REF_COUNTED: u32 = 0x8;
        if flags & WEAK_REF != 0 {
            return None;
        }
        Some(match kind {
            0 => RootKind::Stack,
            1 => RootKind::Finalizer,
            2 if flags & REF_COUNTED != 0 => RootKind::Other,
            2 if flags == PINNING => RootKind::PinnedHandle,
            2 => RootKind::StrongHandle,
            _ => RootKind::Other,
        })
    }

    /// Preference when explaining what holds an object: statics and handles name a
    /// long-lived owner, whereas a stack root is often just the code currently running.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            RootKind::Static { .. } => 0,
            RootKind::StrongHandle => 1,
            RootKind::PinnedHandle => 2,
            RootKind::Other => 3,
            RootKind::Finalizer => 4,
            RootKind::Stack => 5,
        }
    }
}

impl std::fmt::Display for RootKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootKind::Static { type_name, field_name } if type_name.is_empty() => write!(f, "static {field_name}"),
            RootKind::Static { type_name, field_name } => write!(f, "static {type_name}.{field_name}"),
            RootKind::StrongHandle => f.write_str("[strong handle]"),
            RootKind::PinnedHandle => f.write_str("[pinned handle]"),
            RootKind::Other => f.write_str("[other root]"),
            RootKind::Finalizer => f.write_str("[finalizer queue]"),
            RootKind::Stack => f.write_str("[local var]"),
        }
    }
}

/// A root: an object and why it is alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Root {
    /// The rooted object.
    pub node: NodeIndex,
    /// Why.
    pub kind: RootKind,
}

/// What the builder had to drop, and the graph's size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GraphStats {
    /// Objects in the graph.
    pub nodes: u64,
    /// References kept.
    pub edges: u64,
    /// Distinct roots kept.
    pub roots: u64,
    /// References to addresses that are not objects of the snapshot (dropped).
    pub dropped_edges: u64,
    /// Roots pointing at addresses that are not objects of the snapshot (dropped).
    pub dropped_roots: u64,
    /// Repeated object addresses; the first occurrence is kept, later ones and their
    /// references dropped.
    pub duplicate_nodes: u64,
}

/// Collects `GCBulkNode`, `GCBulkEdge`, root and type events into an [`ObjectGraph`].
///
/// Nodes and edges are two independent ordered streams: node *k* owns the next
/// `edge_count` entries of the flat edge sequence, however the runtime happened to split
/// both streams into events. Both are stored in arrival order and paired at
/// [`finish`](Self::finish), so their relative order of arrival does not matter.
#[derive(Debug, Default)]
pub struct ObjectGraphBuilder {
    addresses: Vec<u64>,
    sizes: Sizes,
    type_indexes: Vec<u32>,
    edge_counts: Vec<u32>,
    announced_edges: u64,
    edges: Vec<u64>,
    types: TypeTable,
    roots: Vec<(u64, PendingRoot)>,
    next_event: [u32; 2],
    /// `(delegate address, index in method_names)`.
    delegate_methods: Vec<(u64, u32)>,
    method_names: Vec<String>,
}

#[derive(Debug)]
enum PendingRoot {
    Kind(RootKind),
    /// Static whose declaring type may be named later.
    Static {
        type_id: u64,
        field_name: String,
    },
}

/// Object sizes in 4 bytes each: no object of a real heap comes near 4 GiB, but an array
/// can, so larger sizes are kept aside, marked by `u32::MAX`.
#[derive(Clone, Debug, Default)]
struct Sizes {
    small: Vec<u32>,
    /// (position, size), ascending by position.
    large: Vec<(u32, u64)>,
}

impl Sizes {
    fn push(&mut self, size: u64) {
        match u32::try_from(size) {
            Ok(small) if small != u32::MAX => self.small.push(small),
            _ => {
                self.large.push((self.small.len() as u32, size));
                self.small.push(u32::MAX);
            }
        }
    }

    fn get(&self, i: usize) -> u64 {
        match self.small[i] {
            u32::MAX => self.large.binary_search_by_key(&(i as u32), |&(at, _)| at).map_or(0, |k| self.large[k].1),
            small => u64::from(small),
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.small.len()).map(|i| self.get(i))
    }

    fn memory_bytes(&self) -> usize {
        self.small.capacity() * 4 + self.large.capacity() * 16
    }
}

/// Type ids (MethodTable addresses) interned to dense indexes, names resolved late.
#[derive(Debug, Default)]
struct TypeTable {
    index_of: HashMap<u64, u32>,
    /// Ids below `DENSE_IDS` (a dump's type indexes) skip the hash map, which would
    /// otherwise be looked up once per object.
    dense: Vec<u32>,
    ids: Vec<u64>,
    names: Vec<Option<String>>,
}

const DENSE_IDS: u64 = 1 << 16;

impl TypeTable {
    fn intern(&mut self, type_id: u64) -> u32 {
        if type_id < DENSE_IDS {
            let slot = type_id as usize;
            if slot >= self.dense.len() {
                self.dense.resize(slot + 1, u32::MAX);
            }
            if self.dense[slot] == u32::MAX {
                self.dense[slot] = self.push(type_id);
            }
            return self.dense[slot];
        }
        match self.index_of.get(&type_id) {
            Some(&i) => i,
            None => {
                let i = self.push(type_id);
                self.index_of.insert(type_id, i);
                i
            }
        }
    }

    fn push(&mut self, type_id: u64) -> u32 {
        self.ids.push(type_id);
        self.names.push(None);
        (self.ids.len() - 1) as u32
    }

    fn index_of(&self, type_id: u64) -> Option<u32> {
        if type_id < DENSE_IDS {
            return self.dense.get(type_id as usize).copied().filter(|&i| i != u32::MAX);
        }
        self.index_of.get(&type_id).copied()
    }

    fn name_of_id(&self, type_id: u64) -> String {
        self.index_of(type_id)
            .and_then(|i| self.names[i as usize].clone())
            .unwrap_or_else(|| unknown_type_name(type_id))
    }
}

impl ObjectGraphBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names a type id; `name` is the raw `BulkType` name and is cleaned here.
    pub fn add_type(&mut self, type_id: u64, name: &str) {
        let index = self.types.intern(type_id);
        self.types.names[index as usize] = Some(clean_type_name(name));
    }

    /// One `GCBulkNode` value, in stream order.
    pub fn add_node(&mut self, address: u64, size: u64, type_id: u64, edge_count: u64) {
        let type_index = self.types.intern(type_id);
        self.addresses.push(address);
        self.sizes.push(size);
        self.type_indexes.push(type_index);
        // A single object with 4 billion references cannot exist (arrays are capped at
        // 2^31 elements); saturating keeps the stream accounting consistent regardless.
        self.edge_counts.push(u32::try_from(edge_count).unwrap_or(u32::MAX));
        self.announced_edges += edge_count;
    }

    /// Room for `nodes` more objects, when their number is known up front (a dump's walk).
    pub fn reserve_nodes(&mut self, nodes: usize) {
        self.addresses.reserve(nodes);
        self.sizes.small.reserve(nodes);
        self.type_indexes.reserve(nodes);
        self.edge_counts.reserve(nodes);
    }

    /// One object and its references at once: `references` appends the referenced
    /// addresses to the vector it is given (the builder's own, so they are copied once).
    pub fn add_node_with(&mut self, address: u64, size: u64, type_id: u64, references: impl FnOnce(&mut Vec<u64>)) {
        let before = self.edges.len();
        references(&mut self.edges);
        let count = (self.edges.len() - before) as u64;
        self.add_node(address, size, type_id, count);
    }

    /// One `GCBulkEdge` value (the referenced object's address), in stream order.
    pub fn add_edge(&mut self, target_address: u64) {
        self.edges.push(target_address);
    }

    /// Many `GCBulkEdge` values at once, in stream order.
    pub fn add_edges(&mut self, target_addresses: impl IntoIterator<Item = u64>) {
        self.edges.extend(target_addresses);
    }

    /// A root from `GCBulkRootEdge` (see [`RootKind::from_gc_root`]) or elsewhere.
    pub fn add_root(&mut self, address: u64, kind: RootKind) {
        self.roots.push((address, PendingRoot::Kind(kind)));
    }

    /// What the delegate at `address` calls (a method's full name), when the snapshot could
    /// tell (a dump, through the runtime's data access); resolved at finish like roots.
    pub fn add_delegate_method(&mut self, address: u64, method: &str) {
        if self.method_names.last().is_none_or(|last| last != method) {
            self.method_names.push(method.to_string());
        }
        self.delegate_methods.push((address, (self.method_names.len() - 1) as u32));
    }

    /// A static field whose declaring type is known by id; the type is named at finish, since
    /// its `BulkType` may come later.
    pub fn add_static_root(&mut self, address: u64, declaring_type_id: u64, field_name: &str) {
        self.roots
            .push((address, PendingRoot::Static { type_id: declaring_type_id, field_name: field_name.to_string() }));
    }

    /// Checks a bulk event's `Index` before its values are added: each stream numbers its
    /// events 0, 1, 2, … and a gap means a lost event, which would silently shift every
    /// later node's edges.
    pub fn check_event_index(&mut self, stream: HeapStream, index: u32) -> Result<()> {
        let slot = &mut self.next_event[stream as usize];
        if index != *slot {
            return Err(Error::EventOutOfSequence { stream, expected: *slot, got: index });
        }
        *slot += 1;
        Ok(())
    }

    /// Pairs nodes with their edges, sorts by address, resolves references, roots and
    /// type names. Fails if the edge stream does not match the nodes' edge counts.
    pub fn finish(self) -> Result<ObjectGraph> {
        self.finish_observed(&mut ())
    }

    /// [`finish`](Self::finish), telling `phases` as each step begins.
    pub fn finish_observed(self, phases: &mut dyn Phases) -> Result<ObjectGraph> {
        phases.begin("graph: check and order the objects");
        let received = self.edges.len() as u64;
        if received > self.announced_edges {
            return Err(Error::EdgesLeftOver { left_over: received - self.announced_edges });
        }
        if received < self.announced_edges {
            return Err(Error::EdgesMissing { announced: self.announced_edges, received });
        }
        let nodes = self.addresses.len() as u64;
        if nodes >= u64::from(u32::MAX) {
            return Err(Error::TooLarge { what: "nodes", limit: u64::from(u32::MAX) - 1 });
        }
        // Retention adds one edge per root to the references: both must fit 32-bit offsets.
        if received + nodes > u64::from(u32::MAX) {
            return Err(Error::TooLarge { what: "edges", limit: u64::from(u32::MAX) - nodes });
        }
        let ObjectGraphBuilder {
            addresses,
            sizes,
            type_indexes,
            mut edge_counts,
            edges,
            types,
            roots,
            delegate_methods,
            method_names,
            ..
        } = self;

        // Where each node's edges start in the flat stream, in arrival order (in place of
        // the counts, plus the end).
        let mut offset = 0u32;
        for count in &mut edge_counts {
            let start = offset;
            offset += *count;
            *count = start;
        }
        edge_counts.push(offset);
        let first_edge = edge_counts;

        let mut duplicate_nodes = 0u64;
        let (addresses, sizes, type_index, order) = if addresses.windows(2).all(|w| w[0] < w[1]) {
            // Already in address order, every address once: a dump's heap walk.
            (addresses, sizes, type_indexes, None)
        } else {
            // A stable sort keeps the first of duplicate addresses first.
            let mut order: Vec<u32> = (0..addresses.len() as u32).collect();
            order.sort_by_key(|&i| addresses[i as usize]);
            order.dedup_by(|later, earlier| {
                let same = addresses[*later as usize] == addresses[*earlier as usize];
                duplicate_nodes += u64::from(same);
                same
            });
            let mut sorted_sizes = Sizes::default();
            for &i in &order {
                sorted_sizes.push(sizes.get(i as usize));
            }
            let sorted_addresses = order.iter().map(|&i| addresses[i as usize]).collect();
            let sorted_types = order.iter().map(|&i| type_indexes[i as usize]).collect();
            (sorted_addresses, sorted_sizes, sorted_types, Some(order))
        };

        phases.begin("graph: resolve references (all cores)");
        let (edge_offsets, edge_targets) = match order {
            // The edges are already in node order: resolve them where they lie, in parallel.
            None => resolve_in_place(&addresses, first_edge, edges),
            Some(order) => {
                let locator = AddressIndex::new(&addresses);
                let mut edge_offsets: Vec<u32> = Vec::with_capacity(addresses.len() + 1);
                let mut edge_targets: Vec<u32> = Vec::with_capacity(edges.len());
                for (i, &arrived) in order.iter().enumerate() {
                    let arrived = arrived as usize;
                    edge_offsets.push(edge_targets.len() as u32);
                    let stream = &edges[first_edge[arrived] as usize..first_edge[arrived + 1] as usize];
                    let mut hint = i;
                    for &target in stream {
                        if let Some(t) = locator.find_near(&addresses, hint, target) {
                            edge_targets.push(t as u32);
                            hint = t;
                        }
                    }
                }
                edge_offsets.push(edge_targets.len() as u32);
                edge_targets.shrink_to_fit();
                (edge_offsets, edge_targets)
            }
        };
        phases.begin("graph: type names and roots");
        // Includes the edges of dropped duplicate nodes.
        let dropped_edges = received - edge_targets.len() as u64;

        let type_names: Vec<String> = types
            .ids
            .iter()
            .zip(&types.names)
            .map(|(&id, name)| name.clone().unwrap_or_else(|| unknown_type_name(id)))
            .collect();

        let mut dropped_roots = 0u64;
        let mut seen: HashSet<(u32, RootKind)> = HashSet::new();
        let mut resolved: Vec<Root> = Vec::new();
        for (address, pending) in roots {
            let Ok(node) = addresses.binary_search(&address) else {
                dropped_roots += 1;
                continue;
            };
            let kind = match pending {
                PendingRoot::Kind(kind) => kind,
                PendingRoot::Static { type_id, field_name } => {
                    RootKind::Static { type_name: types.name_of_id(type_id), field_name }
                }
            };
            // The same object is typically rooted by many stack slots: keep one per kind.
            if seen.insert((node as u32, kind.clone())) {
                resolved.push(Root { node: NodeIndex(node as u32), kind });
            }
        }
        resolved.sort_by(|a, b| a.kind.rank().cmp(&b.kind.rank()).then(a.node.cmp(&b.node)));

        let stats = GraphStats {
            nodes: addresses.len() as u64,
            edges: edge_targets.len() as u64,
            roots: resolved.len() as u64,
            dropped_edges,
            dropped_roots,
            duplicate_nodes,
        };
        let mut delegate_methods: Vec<(u32, u32)> = delegate_methods
            .into_iter()
            .filter_map(|(address, method)| Some((addresses.binary_search(&address).ok()? as u32, method)))
            .collect();
        delegate_methods.sort_unstable();
        delegate_methods.dedup_by_key(|&mut (node, _)| node);
        Ok(ObjectGraph {
            addresses,
            type_index,
            sizes,
            edge_offsets,
            edge_targets,
            type_names,
            roots: resolved,
            stats,
            delegate_methods,
            method_names,
        })
    }
}

/// Resolves every node's references (`edges`, in node order, each node's run of
/// `first_edge`-many) to node positions, on all cores: each thread resolves one slice of the
/// flat edge sequence where it lies, then one sequential pass drops what did not resolve and
/// builds the offsets. `first_edge` is per node, plus the end.
fn resolve_in_place(addresses: &[u64], first_edge: Vec<u32>, edges: Vec<u64>) -> (Vec<u32>, Vec<u32>) {
    let index = AddressIndex::new(addresses);
    let starts: &[u32] = &first_edge;
    let mut resolved = vec![0u32; edges.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    // Slices of whole nodes, about equal in edges.
    let per_thread = edges.len().div_ceil(threads).max(1);
    let mut bounds = vec![0usize];
    let mut next_cut = per_thread;
    for (node, &first) in starts.iter().enumerate().take(addresses.len()) {
        if first as usize >= next_cut {
            bounds.push(node);
            next_cut = first as usize + per_thread;
        }
    }
    bounds.push(addresses.len());
    std::thread::scope(|scope| {
        let mut rest: &mut [u32] = &mut resolved;
        for w in bounds.windows(2) {
            let (from, to) = (w[0], w[1]);
            let (mine, others) = rest.split_at_mut((starts[to] - starts[from]) as usize);
            rest = others;
            let (edges, index) = (&edges, &index);
            scope.spawn(move || {
                let base = starts[from] as usize;
                let mut near = NearHits::new();
                for node in from..to {
                    near.start(node);
                    for e in starts[node] as usize..starts[node + 1] as usize {
                        mine[e - base] = near.find(index, addresses, edges[e]).map_or(UNRESOLVED, |t| t as u32);
                    }
                }
            });
        }
    });
    drop(edges);
    // Compact: a reference can only move towards the front, and so can a node's start (the
    // offsets take over the arrival offsets' memory, each read before it is overwritten).
    let mut edge_offsets = first_edge;
    let mut kept = 0usize;
    for node in 0..addresses.len() {
        let (start, end) = (edge_offsets[node] as usize, edge_offsets[node + 1] as usize);
        edge_offsets[node] = kept as u32;
        for e in start..end {
            let t = resolved[e];
            if t != UNRESOLVED {
                resolved[kept] = t;
                kept += 1;
            }
        }
    }
    edge_offsets[addresses.len()] = kept as u32;
    edge_offsets.truncate(addresses.len() + 1);
    resolved.truncate(kept);
    resolved.shrink_to_fit();
    (edge_offsets, resolved)
}

/// Where an object's references are looked up before the address index, in the order tried:
/// - the one or two objects after the last hit, while hits keep coming that way: arrays hold
///   their elements in address order, often every other object (each element followed by what
///   it holds);
/// - the two objects on either side of the object itself: a node its item, a pair its value,
///   a list node its neighbours;
/// - the last object the index found: an owner that many objects point back at (a list node's
///   list, a child's parent).
///
/// Each guess compares an address next to ones just read; a guess next to a reference that
/// went anywhere would miss the cache, so a far hit switches the first kind off until the
/// index finds a near one again.
struct NearHits {
    node: usize,
    last: usize,
    streak: bool,
    /// (address, position) of the last object the index found.
    repeat: Option<(u64, usize)>,
}

impl NearHits {
    fn new() -> Self {
        NearHits { node: 0, last: 0, streak: false, repeat: None }
    }

    /// Next come the references of `node`, whose neighbours the walk in node order has in cache.
    fn start(&mut self, node: usize) {
        self.node = node;
        self.last = node;
        self.streak = true;
    }

    fn find(&mut self, index: &AddressIndex, addresses: &[u64], target: u64) -> Option<usize> {
        let is_at = |k: usize| addresses.get(k) == Some(&target);
        let node = self.node;
        let guess = if self.streak && is_at(self.last + 1) {
            Some(self.last + 1)
        } else if self.streak && is_at(self.last + 2) {
            Some(self.last + 2)
        } else {
            [node + 1, node + 2, node.wrapping_sub(1), node.wrapping_sub(2)].into_iter().find(|&k| is_at(k))
        };
        if let Some(k) = guess {
            self.streak = true;
            self.last = k;
            return Some(k);
        }
        if let Some((address, k)) = self.repeat
            && address == target
        {
            return Some(k);
        }
        let found = index.find(addresses, target)?;
        self.streak = found > self.last && found - self.last <= 2;
        self.last = found;
        self.repeat = Some((target, found));
        Some(found)
    }
}

/// A reference that is not an object of the snapshot (node positions stay below it).
const UNRESOLVED: u32 = u32::MAX;

/// Finds an address among millions of sorted ones in constant time: one bit per 8-byte
/// granule of the address space that holds objects, set where an object starts, and per
/// 64-bit word of bits the number of objects before it, so a position is a rank plus a
/// population count, read from one 16-byte entry (one cache line). A binary search missed
/// the cache at nearly every step once the heap outgrew the cache, and references go
/// everywhere. The address space is cut into 2 MiB blocks, found through a table over the
/// span of blocks that hold objects (a binary search over them where that span is mostly
/// empty); where the objects are too sparse for bitmaps to pay (more than 16 blocks per
/// 1,000 objects, a made-up heap) or not 8-byte aligned, a sampled binary search is used
/// instead.
enum AddressIndex {
    Bitmap {
        blocks: Vec<u64>,
        /// Per block from `blocks[0]` on: its position in `blocks`, or `NO_BLOCK`; empty when
        /// the span is too sparse for a table.
        table: Vec<u32>,
        words: Vec<RankedWord>,
    },
    Sampled {
        samples: Vec<u64>,
    },
}

const NO_BLOCK: u32 = u32::MAX;

#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct RankedWord {
    bits: u64,
    rank: u32,
}

const BLOCK_SHIFT: u32 = 21;
const WORDS_PER_BLOCK: usize = 1 << (BLOCK_SHIFT - 3 - 6);
const SAMPLE_EVERY: usize = 64;

impl AddressIndex {
    fn new(addresses: &[u64]) -> Self {
        let mut blocks: Vec<u64> = Vec::new();
        for &a in addresses {
            if blocks.last() != Some(&(a >> BLOCK_SHIFT)) {
                blocks.push(a >> BLOCK_SHIFT);
            }
        }
        let aligned = addresses.iter().all(|&a| a & 7 == 0);
        if !aligned || blocks.len() * 1000 > addresses.len().max(1000) * 16 {
            return AddressIndex::Sampled { samples: addresses.iter().step_by(SAMPLE_EVERY).copied().collect() };
        }
        let mut words = vec![RankedWord::default(); blocks.len() * WORDS_PER_BLOCK];
        let mut block = 0usize;
        for &a in addresses {
            while blocks[block] != a >> BLOCK_SHIFT {
                block += 1;
            }
            let granule = ((a >> 3) as usize) & (WORDS_PER_BLOCK * 64 - 1);
            words[block * WORDS_PER_BLOCK + granule / 64].bits |= 1 << (granule % 64);
        }
        let mut rank = 0u32;
        for w in &mut words {
            w.rank = rank;
            rank += w.bits.count_ones();
        }
        let span = match (blocks.first(), blocks.last()) {
            (Some(first), Some(last)) => (last - first + 1) as usize,
            _ => 0,
        };
        let mut table = Vec::new();
        if span <= blocks.len() * 4 + 1024 {
            table = vec![NO_BLOCK; span];
            for (i, b) in blocks.iter().enumerate() {
                table[(b - blocks[0]) as usize] = i as u32;
            }
        }
        AddressIndex::Bitmap { blocks, table, words }
    }

    /// The position of `target` in `addresses` (the ones `new` indexed). The sampled search
    /// tries `hint + 1` first; the bitmaps are as quick without (and reading `addresses` at
    /// a random hint would miss the cache for the references that go anywhere).
    fn find_near(&self, addresses: &[u64], hint: usize, target: u64) -> Option<usize> {
        if matches!(self, AddressIndex::Sampled { .. }) && addresses.get(hint + 1) == Some(&target) {
            return Some(hint + 1);
        }
        self.find(addresses, target)
    }

    fn find(&self, addresses: &[u64], target: u64) -> Option<usize> {
        match self {
            AddressIndex::Bitmap { blocks, table, words } => {
                if target & 7 != 0 {
                    return None;
                }
                let block = if table.is_empty() {
                    blocks.binary_search(&(target >> BLOCK_SHIFT)).ok()?
                } else {
                    let slot = (target >> BLOCK_SHIFT).checked_sub(blocks[0])?;
                    match table.get(usize::try_from(slot).ok()?) {
                        Some(&b) if b != NO_BLOCK => b as usize,
                        _ => return None,
                    }
                };
                let granule = ((target >> 3) as usize) & (WORDS_PER_BLOCK * 64 - 1);
                let word = words[block * WORDS_PER_BLOCK + granule / 64];
                let bit = 1u64 << (granule % 64);
                (word.bits & bit != 0).then(|| word.rank as usize + (word.bits & (bit - 1)).count_ones() as usize)
            }
            AddressIndex::Sampled { samples } => {
                let block = samples.partition_point(|&a| a <= target).checked_sub(1)?;
                let start = block * SAMPLE_EVERY;
                let end = (start + SAMPLE_EVERY).min(addresses.len());
                addresses[start..end].binary_search(&target).ok().map(|k| start + k)
            }
        }
    }
}

/// Objects, references and roots of one heap snapshot.
#[derive(Clone, Debug)]
pub struct ObjectGraph {
    /// Sorted ascending; position = node index.
    addresses: Vec<u64>,
    type_index: Vec<u32>,
    sizes: Sizes,
    /// Node i's references are `edge_targets[edge_offsets[i]..edge_offsets[i + 1]]`.
    edge_offsets: Vec<u32>,
    edge_targets: Vec<u32>,
    type_names: Vec<String>,
    /// Best root kind first (statics, handles, …, stack), then by node.
    roots: Vec<Root>,
    stats: GraphStats,
    /// `(delegate node, index in method_names)`, by node.
    delegate_methods: Vec<(u32, u32)>,
    method_names: Vec<String>,
}

impl ObjectGraph {
    /// Number of objects.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// True if the snapshot has no objects.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Number of references.
    pub fn edge_count(&self) -> usize {
        self.edge_targets.len()
    }

    /// The object at `address`, if it is in the snapshot.
    pub fn find(&self, address: u64) -> Option<NodeIndex> {
        self.addresses.binary_search(&address).ok().map(|i| NodeIndex(i as u32))
    }

    /// Address of an object.
    pub fn address(&self, node: NodeIndex) -> u64 {
        self.addresses[node.index()]
    }

    /// Shallow size of an object.
    pub fn size(&self, node: NodeIndex) -> u64 {
        self.sizes.get(node.index())
    }

    /// Cleaned type name of an object.
    pub fn type_name(&self, node: NodeIndex) -> &str {
        &self.type_names[self.type_index[node.index()] as usize]
    }

    /// Objects an object references.
    pub fn children(&self, node: NodeIndex) -> impl ExactSizeIterator<Item = NodeIndex> + '_ {
        self.child_slice(node.0).iter().map(|&t| NodeIndex(t))
    }

    /// Roots, best kind first.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The method the delegate `node` calls, when the snapshot told
    /// ([`ObjectGraphBuilder::add_delegate_method`]).
    pub fn delegate_method(&self, node: NodeIndex) -> Option<&str> {
        let i = self.delegate_methods.binary_search_by_key(&node.0, |&(n, _)| n).ok()?;
        Some(&self.method_names[self.delegate_methods[i].1 as usize])
    }

    /// Sizes and what was dropped while building.
    pub fn stats(&self) -> &GraphStats {
        &self.stats
    }

    /// All objects whose cleaned type name is `type_name`.
    pub fn nodes_of_type(&self, type_name: &str) -> Vec<NodeIndex> {
        let wanted = self.type_indexes_named(type_name);
        (0..self.len() as u32).filter(|&i| wanted[self.type_index[i as usize] as usize]).map(NodeIndex).collect()
    }

    /// The per-type histogram of this snapshot.
    pub fn histogram(&self) -> HeapHistogram {
        let mut builder = HeapHistogramBuilder::new();
        for (i, name) in self.type_names.iter().enumerate() {
            builder.add_type(i as u64, name);
        }
        for (&t, size) in self.type_index.iter().zip(self.sizes.iter()) {
            builder.add_object(u64::from(t), size);
        }
        builder.finish()
    }

    /// Bytes held by the graph's arrays (capacity, excluding type-name strings and roots).
    pub fn memory_bytes(&self) -> usize {
        self.addresses.capacity() * 8
            + self.type_index.capacity() * 4
            + self.sizes.memory_bytes()
            + self.edge_offsets.capacity() * 4
            + self.edge_targets.capacity() * 4
    }

    pub(crate) fn child_slice(&self, node: u32) -> &[u32] {
        &self.edge_targets[self.edge_span(node)]
    }

    /// Where `node`'s references lie in [`Self::all_edge_targets`].
    pub(crate) fn edge_span(&self, node: u32) -> std::ops::Range<usize> {
        let i = node as usize;
        self.edge_offsets[i] as usize..self.edge_offsets[i + 1] as usize
    }

    /// Every reference, object by object.
    pub(crate) fn all_edge_targets(&self) -> &[u32] {
        &self.edge_targets
    }

    pub(crate) fn type_index_of(&self, node: u32) -> u32 {
        self.type_index[node as usize]
    }

    pub(crate) fn type_names(&self) -> &[String] {
        &self.type_names
    }

    /// Per type index: does it carry `type_name`? (Several MethodTables can share a name.)
    pub(crate) fn type_indexes_named(&self, type_name: &str) -> Vec<bool> {
        self.type_names.iter().map(|n| n == type_name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{AddressIndex, NearHits};

    #[test]
    fn the_address_index_finds_what_bisection_finds() {
        // Dense heaps (bitmaps), objects across 2 MiB blocks (found through a table, or by
        // bisection where the blocks are far apart), sparse or unaligned (sampled).
        type AddressOf = fn(u64) -> u64;
        let layouts: [(&str, AddressOf); 5] = [
            ("dense", |i| 0x1000 + i * 40 + (i % 4) * 8),
            ("blocks", |i| 0x7f00_0000_0000 + (i / 100) * (3 << 20) + (i % 100) * 24),
            ("far blocks", |i| 0x7f00_0000_0000 + (i / 100) * (200 << 21) + (i % 100) * 24),
            ("sparse", |i| 0x1000 + i * (5 << 20)),
            ("unaligned", |i| 0x1001 + i * 44),
        ];
        for (name, at) in layouts {
            for n in [0u64, 1, 63, 64, 65, 200, 1000, 5000] {
                let addresses: Vec<u64> = (0..n).map(at).collect();
                let index = AddressIndex::new(&addresses);
                let mut probes: Vec<u64> = addresses.iter().flat_map(|&a| [a, a - 8, a + 8, a + 1]).collect();
                probes.extend([0, 8, u64::MAX, u64::MAX - 7]);
                for target in probes {
                    let want = addresses.binary_search(&target).ok();
                    assert_eq!(index.find(&addresses, target), want, "{name} {n} {target:#x}");
                    for hint in [0, n as usize / 2] {
                        assert_eq!(
                            index.find_near(&addresses, hint, target),
                            want,
                            "{name} {n} {target:#x} near {hint}"
                        );
                    }
                }
            }
        }
    }

    /// Runs of references to the next object, to every other one, backwards, far away, around
    /// the object, back to one owner, to addresses that are no object and past the end: the
    /// guesses never change an answer.
    #[test]
    fn near_hits_find_what_the_index_finds() {
        for (name, at) in [("dense", (|i| 0x1000 + i * 24) as fn(u64) -> u64), ("unaligned", |i| 0x1001 + i * 44)] {
            let n = 3000u64;
            let addresses: Vec<u64> = (0..n).map(at).collect();
            let index = AddressIndex::new(&addresses);
            let mut x = 7u64;
            let mut near = NearHits::new();
            for node in [0usize, 1, 1500, 1501, n as usize - 3, n as usize - 1] {
                near.start(node);
                let mut k = node as u64;
                for step in 0..400u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    k = match (step / 40) % 7 {
                        0 => k + 1,
                        1 => k + 2,
                        2 => k.saturating_sub(1),
                        3 => x % (n + 5),
                        // Around the object, and an owner every reference goes back to.
                        4 => (node as u64 + x % 5).saturating_sub(2),
                        5 if step % 2 == 0 => 17,
                        5 => x % n,
                        _ => k + 3,
                    };
                    let target = if x.is_multiple_of(11) { at(k) + 8 } else { at(k) };
                    let want = addresses.binary_search(&target).ok();
                    assert_eq!(near.find(&index, &addresses, target), want, "{name} node {node} step {step}");
                }
            }
        }
    }
}
