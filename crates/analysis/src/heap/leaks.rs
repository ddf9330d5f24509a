//! Leak suspects: what accumulates, *where* it accumulates, and how sure we are.
//!
//! A suspect is a group of instances kept by one holder (see [`super::holders`]): one type
//! under two holders is two suspects, each with what that holder keeps. The group is then
//! recognised as one of the common .NET leak patterns, each of which names its holder:
//!
//! - **event handlers**: a multicast delegate's invocation list (an `Object[]` held by a
//!   delegate of the same type as its elements) with many handlers. Recognised by shape, so
//!   it works for any delegate type; the event is the static field that holds the delegate.
//! - **timers**: `System.Threading.TimerQueueTimer`s still scheduled on the runtime's timer
//!   queue, named by what their callbacks lead to (closure and target).
//! - **closures**: delegates whose targets are compiler-generated closure objects
//!   (`<>c__DisplayClass…`, or Mono's `<Method>c__AnonStorey…`), named by what they capture.
//! - **GC handles**: objects each the target of a strong or pinned GC handle and held by
//!   nothing else (`GCHandle.Alloc` never freed; pinned buffers of async I/O never completed).
//!   A handle is a slot in the runtime's handle table, not an object: nothing on the heap
//!   leads from the code that allocated it, so the suspect names the handle kind and what it
//!   holds, not an owner.
//! - **collection**: anything else that piles up under one holder (a `List`, a
//!   `Dictionary`, a linked list), the seed's case.
//!
//! The structural patterns are near-certain signs of a leak, so they count from
//! [`LeakThresholds::min_instances`] handlers or timers whatever their size. A plain big
//! collection is only a suspect above [`LeakThresholds::min_retained_bytes`] and
//! [`LeakThresholds::min_heap_share`], and with low confidence: in one snapshot a large
//! cache or lookup table looks exactly like a leak, which only growth across snapshots
//! tells apart ([`super::growth`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::dominators::RetainedSizes;
use super::graph::{NodeIndex, ObjectGraph, RootKind};
use super::holders::{HolderGroup, holder_groups};
use super::paths::RetentionPaths;
use crate::phases::Phases;

/// When a group of instances is a leak suspect. See `docs/findings-schema.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakThresholds {
    /// Fewest instances under one holder for any suspect (default 1,000): a service keeps a
    /// few hundred handlers, timers or cached entries by design, rarely thousands of one kind
    /// in one place.
    pub min_instances: u64,
    /// Closures and timers: fewest bytes the group must retain (default 1 MiB), so that a
    /// thousand tiny cancellation timers of a busy server are not reported.
    pub min_pattern_bytes: u64,
    /// Plain collections: fewest bytes retained (default 8 MiB; a healthy small service
    /// stays well below this per holder, the seed's leak of 1 M customers is ~96 MB).
    pub min_retained_bytes: u64,
    /// Plain collections: smallest share of the heap retained (0..1, default 0.10).
    pub min_heap_share: f64,
    /// Most suspects reported (default 10).
    pub max_suspects: usize,
}

impl Default for LeakThresholds {
    fn default() -> Self {
        LeakThresholds {
            min_instances: 1_000,
            min_pattern_bytes: 1 << 20,
            min_retained_bytes: 8 << 20,
            min_heap_share: 0.10,
            max_suspects: 10,
        }
    }
}

/// Which leak shape a suspect has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LeakPattern {
    /// Handlers on an event that are added and never removed.
    EventHandlers,
    /// Timers never disposed, kept by the runtime's timer queue.
    Timers,
    /// Closures stored in a long-lived place.
    Closures,
    /// A collection (or any holder) with many instances.
    #[default]
    Collection,
    /// Objects held only by strong or pinned GC handles, one handle each.
    GcHandles,
    /// A type that grew across heap snapshots while the rest stayed steady (the growth
    /// verdict); never recognised from one snapshot.
    Growth,
}

/// How sure a suspect is; suspects are ranked by this, then by retained bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Big, but one snapshot cannot tell a leak from a cache.
    #[default]
    Low,
    /// A shape that usually is a leak.
    Medium,
    /// A shape that practically always is a leak.
    High,
}

/// One suspect: instances of one type kept by one holder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakSuspect {
    /// The type that piles up (for events and timers: what the handlers or callbacks keep).
    pub type_name: String,
    /// Its instances kept by this holder.
    pub instances: u64,
    /// Shallow bytes of the holder's direct members (handlers, timers, elements).
    pub shallow_bytes: u64,
    /// Bytes freed if the holder let go of them.
    pub retained_bytes: u64,
    /// `retained_bytes` / heap bytes.
    pub heap_share: f64,
    /// The root of the holder's path, e.g. `static T.f` or `[strong handle]`.
    pub root: String,
    /// Type names from the rooted object through the holder to the suspect type, inclusive.
    pub path: Vec<String>,
    /// Members of the holder along exactly that path (handlers, timers, elements).
    pub path_instances: u64,
    /// The leak shape.
    #[serde(default)]
    pub pattern: LeakPattern,
    /// How sure we are.
    #[serde(default)]
    pub confidence: Confidence,
    /// The holder, named: `static event App.Catalog.Changed`, `static App.Cache.Items →
    /// List<App.Order>`, `the timer queue (static …)`.
    #[serde(default)]
    pub holder: String,
    /// Why this is a suspect, in words.
    #[serde(default)]
    pub reason: String,
}

const TIMER_QUEUE_TIMER: &str = "System.Threading.TimerQueueTimer";

/// Suspects in `graph`, surest first, then biggest. `heap_bytes` is the total the shares
/// refer to (usually the histogram's total, unreachable objects included).
pub fn leak_suspects(
    graph: &ObjectGraph,
    retained: &RetainedSizes,
    heap_bytes: u64,
    t: &LeakThresholds,
) -> Vec<LeakSuspect> {
    leak_suspects_observed(graph, retained, heap_bytes, t, &mut ())
}

/// [`leak_suspects`], telling `phases` as each step begins.
pub fn leak_suspects_observed(
    graph: &ObjectGraph,
    retained: &RetainedSizes,
    heap_bytes: u64,
    t: &LeakThresholds,
    phases: &mut dyn Phases,
) -> Vec<LeakSuspect> {
    phases.begin("suspects: holder groups");
    let groups = holder_groups(graph, retained, t.min_instances.max(1));
    phases.begin("suspects: patterns");
    let kinds = TypeKinds::of(graph);
    let handles = handle_targets(graph);
    let mut found: Vec<(GroupView<'_>, LeakPattern)> = Vec::new();
    for group in &groups {
        if kinds.is(group.type_index, TIMER) {
            continue; // all timers together, below
        }
        let view = GroupView::new(graph, retained, &kinds, group, &handles);
        let pattern = view.pattern();
        let share = share(group.retained_bytes, heap_bytes);
        let big_enough = match pattern {
            LeakPattern::EventHandlers => true,
            LeakPattern::Closures | LeakPattern::Timers | LeakPattern::GcHandles => {
                group.retained_bytes >= t.min_pattern_bytes
            }
            LeakPattern::Collection | LeakPattern::Growth => {
                group.retained_bytes >= t.min_retained_bytes && share >= t.min_heap_share
            }
        };
        if big_enough {
            found.push((view, pattern));
        }
    }
    phases.begin("suspects: timers");
    let timers = timer_group(graph, retained)
        .filter(|timers| timers.instances >= t.min_instances && timers.retained_bytes >= t.min_pattern_bytes);
    if let Some(timers) = &timers {
        found.push((GroupView::new(graph, retained, &kinds, timers, &handles), LeakPattern::Timers));
    }

    phases.begin("suspects: retention paths of the holders");
    let targets: Vec<NodeIndex> = found.iter().map(|(view, _)| view.path_target()).collect();
    let paths = graph.retention_paths_to(&targets);
    let mut out: Vec<LeakSuspect> = Vec::new();
    let mut best_per_anchor: HashMap<NodeIndex, usize> = HashMap::new();
    for (view, pattern) in &found {
        let suspect = view.describe(&paths, *pattern, heap_bytes);
        if *pattern == LeakPattern::Timers {
            out.push(suspect);
            continue;
        }
        // A dictionary's entries array holds its keys and its values: one collection suspect
        // per holder (objects of several roots have no holder in common).
        let anchor = view.group.anchor;
        let same_holder = anchor.and_then(|a| best_per_anchor.get(&a).copied());
        match same_holder {
            Some(i) if *pattern == LeakPattern::Collection && out[i].pattern == LeakPattern::Collection => {
                if suspect.retained_bytes > out[i].retained_bytes {
                    out[i] = suspect;
                }
            }
            _ => {
                if let Some(a) = anchor {
                    best_per_anchor.insert(a, out.len());
                }
                out.push(suspect);
            }
        }
    }
    out.sort_by(|a, b| {
        b.confidence
            .cmp(&a.confidence)
            .then(b.retained_bytes.cmp(&a.retained_bytes))
            .then_with(|| a.type_name.cmp(&b.type_name))
    });
    out.truncate(t.max_suspects);
    out
}

/// The objects a strong or pinned GC handle holds, by node: whether a pinned one does.
fn handle_targets(graph: &ObjectGraph) -> HashMap<u32, bool> {
    let mut out: HashMap<u32, bool> = HashMap::new();
    for r in graph.roots() {
        let pinned = match r.kind {
            RootKind::StrongHandle => false,
            RootKind::PinnedHandle => true,
            _ => continue,
        };
        *out.entry(r.node.0).or_default() |= pinned;
    }
    out
}

/// Of `group`'s members, those a strong or pinned GC handle holds, of those the pinned ones,
/// and what they retain.
fn count_handle_targets(
    retained: &RetainedSizes,
    group: &HolderGroup,
    handles: &HashMap<u32, bool>,
) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    if handles.is_empty() {
        return counts;
    }
    for m in &group.members {
        if let Some(pinned) = handles.get(&m.0) {
            counts.0 += 1;
            counts.1 += u64::from(*pinned);
            counts.2 += retained.retained(*m).unwrap_or(0);
        }
    }
    counts
}

fn share(bytes: u64, heap_bytes: u64) -> f64 {
    if heap_bytes == 0 { 0.0 } else { bytes as f64 / heap_bytes as f64 }
}

/// Every reachable timer, as one group: the runtime spreads timers over one queue per CPU
/// and two lists per queue, which says nothing about the leak.
fn timer_group(graph: &ObjectGraph, retained: &RetainedSizes) -> Option<HolderGroup> {
    let members: Vec<NodeIndex> =
        graph.nodes_of_type(TIMER_QUEUE_TIMER).into_iter().filter(|&n| retained.retained(n).is_some()).collect();
    let first = *members.first()?;
    let type_index = graph.type_index_of(first.0);
    // The holder is what dominates the head of the first timer's chain (its `TimerQueue`).
    let mut head = first;
    while let Some(d) = retained.immediate_dominator(head).filter(|d| graph.type_index_of(d.0) == type_index) {
        head = d;
    }
    let mut group = HolderGroup {
        anchor: retained.immediate_dominator(head),
        type_index,
        instances: members.len() as u64,
        shallow_bytes: 0,
        retained_bytes: 0,
        members: Vec::new(),
    };
    // The timers of one list form a dominator chain, and a timer's callback may keep another
    // timer: count only timers that no other timer dominates (their retained size already
    // holds the rest).
    let mut under_a_timer: HashMap<u32, bool> = HashMap::new();
    for &m in &members {
        group.shallow_bytes += graph.size(m);
        if !dominated_by_type(graph, retained, m, type_index, &mut under_a_timer) {
            group.retained_bytes += retained.retained(m).unwrap_or(0);
        }
    }
    group.members = members;
    Some(group)
}

/// Whether some dominator of `node` (not `node` itself) has type `type_index`, memoized in
/// `memo` so that the dominator chains of many nodes are walked once in all.
fn dominated_by_type(
    graph: &ObjectGraph,
    retained: &RetainedSizes,
    node: NodeIndex,
    type_index: u32,
    memo: &mut HashMap<u32, bool>,
) -> bool {
    let mut walked = Vec::new();
    let mut cur = retained.immediate_dominator(node);
    let answer = loop {
        let Some(d) = cur else { break false };
        if let Some(&known) = memo.get(&d.0) {
            break known;
        }
        if graph.type_index_of(d.0) == type_index {
            break true;
        }
        walked.push(d.0);
        cur = retained.immediate_dominator(d);
    };
    // Each walked node's own answer: a dominator of its of that type exists iff one was found
    // above it (none of the walked nodes has the type).
    for w in walked {
        memo.insert(w, answer);
    }
    answer
}

/// True for delegate types, by name: the BCL's delegates and the usual naming of custom ones.
/// (Invocation lists are recognised by shape instead, whatever the delegate's name.)
pub(crate) fn is_delegate_type(name: &str) -> bool {
    let base = name.split('<').next().unwrap_or(name);
    const BCL: [&str; 11] = [
        "System.Action",
        "System.Func",
        "System.EventHandler",
        "System.Predicate",
        "System.Comparison",
        "System.Converter",
        "System.Threading.TimerCallback",
        "System.Threading.WaitCallback",
        "System.Threading.SendOrPostCallback",
        "System.Threading.ContextCallback",
        "System.Threading.ParameterizedThreadStart",
    ];
    BCL.contains(&base) || ["EventHandler", "Callback", "Delegate"].iter().any(|s| base.ends_with(s))
}

/// Compiler-generated closure classes: Roslyn's `Outer+<>c__DisplayClass3_0`, Mono's
/// `Outer+<Method>c__AnonStorey0`.
pub(crate) fn is_closure_type(name: &str) -> bool {
    name.contains("c__DisplayClass") || name.contains("c__AnonStorey")
}

/// What the patterns need to know of a type, per type index, read from its name once
/// rather than per object.
struct TypeKinds(Vec<u8>);

const DELEGATE: u8 = 1;
const CLOSURE: u8 = 2;
const TIMER: u8 = 4;

impl TypeKinds {
    fn of(graph: &ObjectGraph) -> Self {
        TypeKinds(
            graph
                .type_names()
                .iter()
                .map(|name| {
                    let mut k = 0;
                    if is_delegate_type(name) {
                        k |= DELEGATE;
                    }
                    if is_closure_type(name) {
                        k |= CLOSURE;
                    }
                    if name == TIMER_QUEUE_TIMER {
                        k |= TIMER;
                    }
                    k
                })
                .collect(),
        )
    }

    fn is(&self, type_index: u32, kind: u8) -> bool {
        self.0[type_index as usize] & kind != 0
    }

    fn of_node(&self, graph: &ObjectGraph, node: NodeIndex, kind: u8) -> bool {
        self.is(graph.type_index_of(node.0), kind)
    }
}

/// From a group member to what it keeps, at most [`MAX_CHAIN`] objects, member first (see
/// [`unwrap_chain`]): kept in place, since every member of a group has one.
#[derive(Clone, Copy)]
struct Chain {
    nodes: [NodeIndex; MAX_CHAIN],
    len: usize,
}

const MAX_CHAIN: usize = 5;

impl Chain {
    fn nodes(&self) -> &[NodeIndex] {
        &self.nodes[..self.len]
    }

    /// The chain's types, as a key.
    fn shape(&self, graph: &ObjectGraph) -> [u32; MAX_CHAIN] {
        let mut key = [u32::MAX; MAX_CHAIN];
        for (k, n) in key.iter_mut().zip(self.nodes()) {
            *k = graph.type_index_of(n.0);
        }
        key
    }
}

/// A holder group and what its members lead to.
struct GroupView<'a> {
    graph: &'a ObjectGraph,
    retained: &'a RetainedSizes,
    group: &'a HolderGroup,
    /// The most common chain from a member to what it keeps (delegate → closure → captured
    /// object), as nodes of one representative member, member first.
    chain: Vec<NodeIndex>,
    /// Members whose chain has that shape.
    chain_members: u64,
    /// For a group no single object holds: the members that are a GC handle's target, of
    /// those the pinned ones, and what they retain.
    handle_targets: (u64, u64, u64),
    /// Of those, how many keep the last object of the chain to themselves (it is dominated
    /// by the chain): "reachable only through".
    exclusive: u64,
}

impl<'a> GroupView<'a> {
    fn new(
        graph: &'a ObjectGraph,
        retained: &'a RetainedSizes,
        kinds: &TypeKinds,
        group: &'a HolderGroup,
        handles: &HashMap<u32, bool>,
    ) -> Self {
        let handle_targets =
            if group.anchor.is_none() { count_handle_targets(retained, group, handles) } else { (0, 0, 0) };
        if !kinds.is(group.type_index, TIMER | DELEGATE | CLOSURE) {
            // Members that are no timer, delegate or closure lead nowhere: each is its own
            // chain, all of one shape, kept to itself.
            let members = group.members.len() as u64;
            return GroupView {
                graph,
                retained,
                group,
                chain: vec![group.members[0]],
                chain_members: members,
                exclusive: members,
                handle_targets,
            };
        }
        // Per chain shape: (members, of which exclusive, first member).
        let mut shapes: HashMap<[u32; MAX_CHAIN], (u64, u64, NodeIndex)> = HashMap::new();
        // Members of a group mostly share one shape: count a run of it before touching the map.
        let mut run: Option<([u32; MAX_CHAIN], (u64, u64, NodeIndex))> = None;
        for &m in &group.members {
            let chain = unwrap_chain(graph, retained, kinds, m);
            let nodes = chain.nodes();
            let last = *nodes.last().expect("the chain starts with the member");
            let exclusive = nodes.len() == 1
                || nodes.windows(2).all(|w| retained.immediate_dominator(w[1]) == Some(w[0]))
                    && retained.retained(last).is_some();
            let shape = chain.shape(graph);
            match &mut run {
                Some((s, counts)) if *s == shape => {
                    counts.0 += 1;
                    counts.1 += u64::from(exclusive);
                }
                _ => {
                    if let Some((s, counts)) = run.take() {
                        merge_shape(&mut shapes, s, counts);
                    }
                    run = Some((shape, (1, u64::from(exclusive), m)));
                }
            }
        }
        if let Some((s, counts)) = run {
            merge_shape(&mut shapes, s, counts);
        }
        let (count, exclusive, sample) =
            shapes.into_values().max_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2))).unwrap_or((0, 0, group.members[0]));
        GroupView {
            graph,
            retained,
            group,
            chain: unwrap_chain(graph, retained, kinds, sample).nodes().to_vec(),
            chain_members: count,
            exclusive,
            handle_targets,
        }
    }

    fn type_of(&self, n: NodeIndex) -> &'a str {
        self.graph.type_name(n)
    }

    /// An `Object[]` owned by a delegate of its elements' type is an invocation list.
    fn invocation_list_owner(&self) -> Option<NodeIndex> {
        let anchor = self.group.anchor?;
        let owner = self.retained.immediate_dominator(anchor)?;
        (self.type_of(anchor) == "System.Object[]"
            && self.graph.type_index_of(owner.0) == self.group.type_index
            && self.graph.children(owner).any(|c| c == anchor))
        .then_some(owner)
    }

    fn pattern(&self) -> LeakPattern {
        if self.type_of(self.chain[0]) == TIMER_QUEUE_TIMER {
            LeakPattern::Timers
        } else if self.handle_targets.0 * 10 >= self.group.instances * 9 && self.group.instances > 0 {
            LeakPattern::GcHandles
        } else if self.invocation_list_owner().is_some() {
            LeakPattern::EventHandlers
        } else if self.chain.iter().any(|&n| is_closure_type(self.type_of(n))) {
            LeakPattern::Closures
        } else {
            LeakPattern::Collection
        }
    }

    /// The object whose retention path [`Self::describe`] needs: the holder, or the first
    /// member's chain when several roots hold the group.
    fn path_target(&self) -> NodeIndex {
        self.group.anchor.unwrap_or(self.chain[0])
    }

    fn describe(&self, paths: &RetentionPaths<'_>, pattern: LeakPattern, heap_bytes: u64) -> LeakSuspect {
        let g = self.graph;
        // The path to the holder, then the chain from a member to what it keeps.
        let holder_path = match self.group.anchor {
            Some(a) => paths.path_to(a),
            None => paths.path_to(self.chain[0]).map(|mut p| {
                p.steps.pop();
                p
            }),
        };
        let (root_kind, holder_steps): (Option<RootKind>, Vec<NodeIndex>) = match holder_path {
            Some(p) => (Some(p.root), p.steps.iter().map(|s| s.node).collect()),
            None => (None, Vec::new()),
        };
        let root = root_kind.as_ref().map_or_else(|| "[unreachable]".to_string(), RootKind::to_string);
        let path = collapse_runs(holder_steps.iter().chain(&self.chain).map(|&n| g.type_name(n)));
        let subject = *self.chain.last().expect("non-empty chain");
        let subject_type = g.type_name(subject).to_string();
        let holder_text = |steps: &[NodeIndex]| -> String {
            let mut s = root.clone();
            for t in collapse_runs(steps.iter().map(|&n| g.type_name(n))) {
                s.push_str(" → ");
                s.push_str(&t);
            }
            s
        };
        // Handle targets are counted alone: the group also has what several roots share.
        let (n, retained_bytes) = match pattern {
            LeakPattern::GcHandles => (self.handle_targets.0, self.handle_targets.2),
            _ => (self.chain_members, self.group.retained_bytes),
        };
        let only = if self.exclusive * 10 >= n * 9 { "reachable only through" } else { "kept by" };
        let (holder, confidence, reason) = match pattern {
            LeakPattern::EventHandlers => {
                let owner = self.invocation_list_owner().expect("checked by pattern()");
                let event = match (&root_kind, holder_steps.as_slice()) {
                    (Some(static_field @ RootKind::Static { .. }), [first, ..]) if *first == owner => {
                        static_field.to_string().replacen("static ", "static event ", 1)
                    }
                    _ => {
                        let at = holder_steps.iter().position(|&s| s == owner).unwrap_or(holder_steps.len());
                        let declaring = at.checked_sub(1).map_or("an object", |i| g.type_name(holder_steps[i]));
                        format!("an event of {declaring} ({})", holder_text(&holder_steps[..at]))
                    }
                };
                let handlers = self.group.instances;
                let reason = format!(
                    "{} `{subject_type}` objects are {only} the invocation list of {event} ({} handlers of type `{}`): \
                     handlers added and never removed",
                    thousands(n),
                    thousands(handlers),
                    g.type_name(self.chain[0]),
                );
                (event, Confidence::High, reason)
            }
            LeakPattern::Timers => {
                let via = self
                    .chain
                    .get(1..self.chain.len().saturating_sub(1))
                    .unwrap_or_default()
                    .iter()
                    .map(|&c| format!("`{}`", g.type_name(c)))
                    .collect::<Vec<_>>()
                    .join(" → ");
                // What the sample timer's callback calls, when the snapshot could tell (a dump).
                let calls = self.chain.iter().find_map(|&c| g.delegate_method(c));
                let callback = match (via.is_empty(), calls) {
                    (true, None) => String::new(),
                    (false, None) => format!(" (callback {via})"),
                    (true, Some(m)) => format!(" (callback calling `{m}`)"),
                    (false, Some(m)) => format!(" (callback {via}, calling `{m}`)"),
                };
                let holder = format!("the runtime's timer queue ({})", holder_text(&holder_steps));
                let reason = format!(
                    "{} `{subject_type}` objects are {only} the callbacks of {} scheduled `System.Threading.Timer`s{callback} \
                     on {holder}: timers created and never disposed",
                    thousands(n),
                    thousands(self.group.instances),
                );
                (holder, Confidence::High, reason)
            }
            LeakPattern::Closures => {
                let closure =
                    self.chain.iter().map(|&c| g.type_name(c)).find(|t| is_closure_type(t)).unwrap_or("a closure");
                let holder = holder_text(&holder_steps);
                let reason = format!(
                    "{} `{subject_type}` objects are captured by closures (`{closure}`) and {only} {} delegates held by \
                     {holder}: callbacks stored and never released",
                    thousands(n),
                    thousands(self.group.instances),
                );
                (holder, Confidence::Medium, reason)
            }
            LeakPattern::GcHandles => {
                let (targets, pinned, _) = self.handle_targets;
                let (kind, how) = if pinned * 2 > targets {
                    (
                        "pinned",
                        "`GCHandle.Alloc(…, GCHandleType.Pinned)` never freed, or buffers of async I/O that never \
                         completed; pinned objects also fragment the heap",
                    )
                } else {
                    ("strong", "`GCHandle.Alloc` never freed")
                };
                let holder = format!("{} {kind} GC handles", thousands(targets));
                let held = if self.chain.len() > 1 {
                    format!(" (through `{}`)", g.type_name(self.chain[0]))
                } else {
                    String::new()
                };
                // No heap reference leads from the handle's owner: the handle table is not on the heap.
                let reason = format!(
                    "{} `{subject_type}` objects{held} retain {} and are each the target of a {kind} GC handle ({} \
                     handles): {how}. A handle is not an object, so the dump does not say which code allocated it",
                    thousands(n),
                    human_bytes(retained_bytes),
                    thousands(targets),
                );
                (holder, Confidence::High, reason)
            }
            LeakPattern::Collection | LeakPattern::Growth => {
                let holder = match self.group.anchor {
                    Some(_) => holder_text(&holder_steps),
                    None => format!("several roots, e.g. {}", holder_text(&holder_steps)),
                };
                let reason = format!(
                    "{} `{subject_type}` objects retain {} ({:.0} % of the heap) and are kept by {holder}: a collection \
                     that only grows leaks like this, but one snapshot cannot tell it from a full cache; compare two \
                     snapshots with `dumpwatch diff`",
                    thousands(n),
                    human_bytes(self.group.retained_bytes),
                    share(self.group.retained_bytes, heap_bytes) * 100.0,
                );
                (holder, Confidence::Low, reason)
            }
        };
        LeakSuspect {
            type_name: subject_type,
            instances: n,
            shallow_bytes: self.group.shallow_bytes,
            retained_bytes,
            heap_share: share(retained_bytes, heap_bytes),
            root,
            path,
            path_instances: self.group.instances,
            pattern,
            confidence,
            holder,
            reason,
        }
    }
}

/// Adds a run of members of one shape to the per-shape counts (the run's first member is the
/// earliest only if the shape has not been seen before).
fn merge_shape(
    shapes: &mut HashMap<[u32; MAX_CHAIN], (u64, u64, NodeIndex)>,
    shape: [u32; MAX_CHAIN],
    (count, exclusive, first): (u64, u64, NodeIndex),
) {
    let e = shapes.entry(shape).or_insert((0, 0, first));
    e.0 += count;
    e.1 += exclusive;
}

/// From a group member to what it keeps: a timer to its callback, a delegate to its target,
/// a closure to its largest capture. At most four hops; member first.
fn unwrap_chain(graph: &ObjectGraph, retained: &RetainedSizes, kinds: &TypeKinds, member: NodeIndex) -> Chain {
    let mut chain = Chain { nodes: [member; MAX_CHAIN], len: 1 };
    let mut cur = member;
    for _ in 0..MAX_CHAIN - 1 {
        let next = if kinds.of_node(graph, cur, TIMER) {
            graph.children(cur).find(|&c| kinds.of_node(graph, c, DELEGATE))
        } else if kinds.of_node(graph, cur, DELEGATE | CLOSURE) {
            // Prefer what this object keeps to itself (a closure may also capture `this`).
            graph.children(cur).filter(|&c| c != cur && retained.retained(c).is_some()).max_by_key(|&c| {
                (retained.immediate_dominator(c) == Some(cur), retained.retained(c), std::cmp::Reverse(c))
            })
        } else {
            None
        };
        match next {
            Some(c) if !chain.nodes().contains(&c) => {
                chain.nodes[chain.len] = c;
                chain.len += 1;
                cur = c;
            }
            _ => break,
        }
    }
    chain
}

/// Type names of a path, with a run of one type (the nodes of a linked list, a chain of
/// timers) written once with its length: `Node (×1,999)`.
fn collapse_runs<'t>(names: impl Iterator<Item = &'t str>) -> Vec<String> {
    let mut out: Vec<(&str, u64)> = Vec::new();
    for name in names {
        match out.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => out.push((name, 1)),
        }
    }
    out.into_iter()
        .flat_map(
            |(name, n)| {
                if n < 3 { vec![name.to_string(); n as usize] } else { vec![format!("{name} (×{})", thousands(n))] }
            },
        )
        .collect()
}

/// `30000` → `30,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
#[path = "leaks_tests.rs"]
mod tests;
