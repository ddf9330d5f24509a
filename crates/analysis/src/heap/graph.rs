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

mod resolve;
mod slots;

use resolve::{AddressIndex, Walked, resolve_in_place};
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
    /// A walk in parts' references instead of `edges`: per part, its first node and its
    /// references (see [`NodeSlots`]).
    edge_runs: Vec<(usize, Vec<u64>)>,
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
        let received = (self.edges.len() + self.edge_runs.iter().map(|(_, run)| run.len()).sum::<usize>()) as u64;
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
            edge_runs,
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
        let walked = if edge_runs.is_empty() { Walked::Whole(edges) } else { Walked::Runs(edge_runs) };
        let (edge_offsets, edge_targets) = match order {
            // The edges are already in node order: resolve them where they lie, in parallel.
            None => resolve_in_place(&addresses, first_edge, walked),
            Some(order) => {
                let edges = walked.into_whole();
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
