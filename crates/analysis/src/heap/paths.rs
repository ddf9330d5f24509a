//! Retention paths: why is this object alive? (`gcroot`)
//!
//! One breadth-first search from the roots gives every object its shortest path to a
//! root. Roots are searched in tiers, statics first, then handles, …, stack roots last,
//! and a tier only reaches objects the better tiers did not: a leaked object is usually
//! also reachable from some running method's locals, but the finding must name the static
//! field or handle that holds it for good.
//!
//! Leak suspects need the paths of a handful of holders only: [`ObjectGraph::retention_paths_to`]
//! stops the search once it has reached them, and its per-object arrays start as zero pages
//! that only the objects searched ever touch.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::graph::{NodeIndex, ObjectGraph, RootKind};

/// One object on a retention path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathStep {
    /// The object.
    pub node: NodeIndex,
    /// Its address.
    pub address: u64,
    /// Its cleaned type name.
    pub type_name: String,
    /// Its shallow size.
    pub size: u64,
}

/// A chain of references from a root to an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionPath {
    /// Why the first object is alive.
    pub root: RootKind,
    /// From the rooted object to the target, inclusive.
    pub steps: Vec<PathStep>,
}

impl std::fmt::Display for RetentionPath {
    /// `static Processor.Current → Processor → CustomerCache → …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.root)?;
        for step in &self.steps {
            write!(f, " → {}", step.type_name)?;
        }
        Ok(())
    }
}

/// Instances of one type held the same way: same root, same chain of types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathGroup {
    /// The path of a representative instance (the shortest, lowest address on ties).
    pub path: RetentionPath,
    /// Instances held this way.
    pub instances: u64,
    /// Their shallow bytes.
    pub bytes: u64,
}

/// `parent` of an object not reached (zero, so the array starts as untouched zero pages).
const UNREACHED: u32 = 0;
/// `parent` of a rooted object.
const ROOTED: u32 = u32::MAX;
/// `parent` of a wanted object not reached yet.
const WANTED: u32 = u32::MAX - 1;

/// Shortest-path tree from the roots (tiered as described in the module docs).
#[derive(Clone, Debug)]
pub struct RetentionPaths<'g> {
    graph: &'g ObjectGraph,
    /// Predecessor on the path plus one, or `ROOTED` / `UNREACHED` (/ `WANTED` while
    /// searching).
    parent: Vec<u32>,
    /// Objects from the root, 0 for a rooted object.
    depth: Vec<u32>,
    /// Rank of the root kind the object was reached from, plus one (0: not reached).
    tier: Vec<u8>,
    /// For rooted objects: which root (index into `graph.roots()`).
    root_of: HashMap<u32, u32>,
}

impl ObjectGraph {
    /// Searches the whole graph once; query many paths from the result.
    pub fn retention_paths(&self) -> RetentionPaths<'_> {
        self.search_paths(&[])
    }

    /// The paths to `targets` only: the search stops once it has reached them all. Paths to
    /// other objects may be missing from the result.
    pub fn retention_paths_to(&self, targets: &[NodeIndex]) -> RetentionPaths<'_> {
        if targets.is_empty() {
            return RetentionPaths {
                graph: self,
                parent: Vec::new(),
                depth: Vec::new(),
                tier: Vec::new(),
                root_of: HashMap::new(),
            };
        }
        self.search_paths(targets)
    }

    /// The tiered breadth-first search; with `targets`, until they are all reached.
    fn search_paths(&self, targets: &[NodeIndex]) -> RetentionPaths<'_> {
        let n = self.len();
        let mut parent = vec![UNREACHED; n];
        let mut depth = vec![0u32; n];
        let mut tier = vec![0u8; n];
        let mut wanted = 0usize;
        for t in targets {
            if parent[t.index()] != WANTED {
                parent[t.index()] = WANTED;
                wanted += 1;
            }
        }
        let everything = targets.is_empty();
        let mut root_of = HashMap::new();
        let mut queue: VecDeque<u32> = VecDeque::new();
        let roots = self.roots();
        let mut next_root = 0;
        // Roots are sorted by rank: seed one rank, exhaust it, then the next.
        'tiers: while next_root < roots.len() {
            let rank = roots[next_root].kind.rank();
            while next_root < roots.len() && roots[next_root].kind.rank() == rank {
                let node = roots[next_root].node.0;
                let p = parent[node as usize];
                if p == UNREACHED || p == WANTED {
                    wanted -= usize::from(p == WANTED);
                    parent[node as usize] = ROOTED;
                    tier[node as usize] = rank + 1;
                    root_of.insert(node, next_root as u32);
                    queue.push_back(node);
                }
                next_root += 1;
            }
            while let Some(v) = queue.pop_front() {
                if !everything && wanted == 0 {
                    break 'tiers;
                }
                for &child in self.child_slice(v) {
                    let c = child as usize;
                    let p = parent[c];
                    if p == UNREACHED || p == WANTED {
                        wanted -= usize::from(p == WANTED);
                        parent[c] = v + 1;
                        depth[c] = depth[v as usize] + 1;
                        tier[c] = rank + 1;
                        queue.push_back(child);
                    }
                }
            }
        }
        // Targets no root reaches.
        if wanted > 0 {
            for t in targets {
                if parent[t.index()] == WANTED {
                    parent[t.index()] = UNREACHED;
                }
            }
        }
        RetentionPaths { graph: self, parent, depth, tier, root_of }
    }

    /// Why `target` is alive: its best path from a root, or `None` if no root reaches it.
    /// For several queries, build [`Self::retention_paths`] once instead.
    pub fn retention_path(&self, target: NodeIndex) -> Option<RetentionPath> {
        self.retention_paths().path_to(target)
    }

    /// The best path to any instance of `type_name` (statics first, then shortest).
    pub fn shortest_path_by_type(&self, type_name: &str) -> Option<RetentionPath> {
        let paths = self.retention_paths();
        let best = self
            .nodes_of_type(type_name)
            .into_iter()
            .filter(|&n| paths.is_reachable(n))
            .min_by_key(|&n| paths.quality(n))?;
        paths.path_to(best)
    }

    /// How the instances of `type_name` are held, grouped by root and chain of types,
    /// most instances first; at most `limit` groups. This is the leak view: "1,000,000
    /// Customer held via static Processor.Current → … → Customer[]".
    pub fn shortest_paths_by_type(&self, type_name: &str, limit: usize) -> Vec<PathGroup> {
        self.retention_paths().groups_for_type(type_name, limit)
    }
}

impl RetentionPaths<'_> {
    /// True if some root reaches `node`.
    pub fn is_reachable(&self, node: NodeIndex) -> bool {
        self.parent.get(node.index()).is_some_and(|&p| p != UNREACHED)
    }

    /// The path from a root to `target`, or `None` if unreachable.
    pub fn path_to(&self, target: NodeIndex) -> Option<RetentionPath> {
        let nodes = self.chain(target.0)?;
        let root = &self.graph.roots()[self.root_of[&nodes[0]] as usize];
        let steps = nodes
            .into_iter()
            .map(|n| {
                let node = NodeIndex(n);
                PathStep {
                    node,
                    address: self.graph.address(node),
                    type_name: self.graph.type_name(node).to_string(),
                    size: self.graph.size(node),
                }
            })
            .collect();
        Some(RetentionPath { root: root.kind.clone(), steps })
    }

    /// See [`ObjectGraph::shortest_paths_by_type`].
    ///
    /// A leak has millions of instances, and a linked list's paths are as long as the list:
    /// so no path is ever walked twice. Each object on the paths to the instances gets the id
    /// of its path's shape (its root's kind and the types along it) from its parent's id and
    /// its own type, exactly, in one pass up from each instance that stops at the first
    /// object already numbered.
    pub fn groups_for_type(&self, type_name: &str, limit: usize) -> Vec<PathGroup> {
        struct Group {
            best: u32,
            instances: u64,
            bytes: u64,
        }
        let wanted = self.graph.type_indexes_named(type_name);
        // Roots of equal kinds (two stack slots, say) hold their objects the same way.
        let mut kind_ids: HashMap<&RootKind, u32> = HashMap::new();
        let kind_of_root: Vec<u32> = self
            .graph
            .roots()
            .iter()
            .map(|r| {
                let next = kind_ids.len() as u32;
                *kind_ids.entry(&r.kind).or_insert(next)
            })
            .collect();
        let mut shapes = PathShapes::new(self.graph.len());
        let mut groups: HashMap<u32, Group> = HashMap::new();
        for node in 0..self.graph.len() as u32 {
            if !wanted[self.graph.type_index_of(node) as usize] || !self.is_reachable(NodeIndex(node)) {
                continue;
            }
            let shape = shapes.of(self, node, &kind_of_root);
            let size = self.graph.size(NodeIndex(node));
            // Nodes come in ascending order and share tier and depth within a shape, so the
            // first one is the best representative.
            let group = groups.entry(shape).or_insert(Group { best: node, instances: 0, bytes: 0 });
            group.instances += 1;
            group.bytes += size;
        }
        let mut ranked: Vec<(u32, Group)> = groups.into_iter().collect();
        let top_address = |shape: u32| self.graph.address(NodeIndex(shapes.top[shape as usize]));
        ranked.sort_by(|(a_shape, a), (b_shape, b)| {
            b.instances
                .cmp(&a.instances)
                .then(b.bytes.cmp(&a.bytes))
                .then(top_address(*a_shape).cmp(&top_address(*b_shape)))
                .then(a.best.cmp(&b.best))
        });
        ranked.truncate(limit);
        ranked
            .into_iter()
            .filter_map(|(_, g)| {
                Some(PathGroup { path: self.path_to(NodeIndex(g.best))?, instances: g.instances, bytes: g.bytes })
            })
            .collect()
    }

    /// Lower is a better explanation: better root kind, then shorter, then lower address.
    fn quality(&self, node: NodeIndex) -> (u8, u32, u32) {
        let i = node.index();
        (self.tier[i], self.depth[i], node.0)
    }

    /// Nodes from the rooted object to `target`.
    fn chain(&self, target: u32) -> Option<Vec<u32>> {
        if !self.is_reachable(NodeIndex(target)) {
            return None;
        }
        let mut nodes = Vec::with_capacity(self.depth[target as usize] as usize + 1);
        let mut current = target;
        loop {
            nodes.push(current);
            match self.parent[current as usize] {
                ROOTED => break,
                p => current = p - 1,
            }
        }
        nodes.reverse();
        Some(nodes)
    }
}

/// Ids of path shapes (root kind + types from the root down), memoized per object.
struct PathShapes {
    /// Per object: its shape, or `NO_SHAPE` until computed.
    of_node: Vec<u32>,
    /// (parent's shape, or `ROOT_KIND | kind` for a rooted object; the object's type) → id.
    ids: HashMap<(u64, u32), u32>,
    /// Per shape: the rooted object its first path starts from.
    top: Vec<u32>,
    /// Reused walk-up buffer.
    pending: Vec<u32>,
}

/// `of_node` of an object whose shape is not known yet.
const NO_SHAPE: u32 = u32::MAX;

/// Marks a root kind in a shape key, apart from the shape ids below 2^32.
const ROOT_KIND: u64 = 1 << 32;

impl PathShapes {
    fn new(nodes: usize) -> Self {
        PathShapes { of_node: vec![NO_SHAPE; nodes], ids: HashMap::new(), top: Vec::new(), pending: Vec::new() }
    }

    /// The shape of reachable `node`'s path.
    fn of(&mut self, paths: &RetentionPaths<'_>, node: u32, kind_of_root: &[u32]) -> u32 {
        self.pending.clear();
        let mut current = node;
        // Up to the first object already numbered, or the rooted object.
        while self.of_node[current as usize] == NO_SHAPE {
            self.pending.push(current);
            match paths.parent[current as usize] {
                ROOTED => break,
                p => current = p - 1,
            }
        }
        while let Some(v) = self.pending.pop() {
            let (parent_key, top) = match paths.parent[v as usize] {
                ROOTED => (ROOT_KIND | u64::from(kind_of_root[paths.root_of[&v] as usize]), v),
                p => {
                    let shape = self.of_node[(p - 1) as usize];
                    (u64::from(shape), self.top[shape as usize])
                }
            };
            let next = self.top.len() as u32;
            let shape = *self.ids.entry((parent_key, paths.graph.type_index_of(v))).or_insert(next);
            if shape == next {
                self.top.push(top);
            }
            self.of_node[v as usize] = shape;
        }
        self.of_node[node as usize]
    }
}
