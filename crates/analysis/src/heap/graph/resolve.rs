//! References from addresses to node positions: an index over the sorted addresses that
//! answers in constant time, guesses that spare it for references to nearby objects, and
//! the resolution of a whole walk's references on all cores.

use crate::heap::{joined, threads, threads_for};

/// A walk's references, in node order: in one vector, or (a walk in parts) one per run of
/// nodes, each with its first node.
pub(in crate::heap) enum Walked {
    Whole(Vec<u64>),
    Runs(Vec<(usize, Vec<u64>)>),
}

impl Walked {
    /// In one vector.
    pub(in crate::heap) fn into_whole(self) -> Vec<u64> {
        match self {
            Walked::Whole(edges) => edges,
            Walked::Runs(runs) => {
                let mut runs = runs.into_iter().map(|(_, run)| run);
                let mut whole = runs.next().unwrap_or_default();
                for run in runs {
                    whole.extend_from_slice(&run);
                }
                whole
            }
        }
    }
}

/// One thread's references: a slice of the whole walk's, or a run's own (freed once resolved).
enum RunEdges<'a> {
    Borrowed(&'a [u64]),
    Owned(Vec<u64>),
}

impl std::ops::Deref for RunEdges<'_> {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            RunEdges::Borrowed(edges) => edges,
            RunEdges::Owned(edges) => edges,
        }
    }
}

/// Resolves every node's references (`walked`, in node order, each node's run of
/// `first_edge`-many) to node positions, on all cores: each thread resolves the references
/// of one run of nodes where they lie (a walk in parts' runs as they came), dropping those
/// that are no object as it goes and noting its nodes' offsets; then each run's references
/// move up behind the run before it. `first_edge` is per node, plus the end; its memory
/// becomes the offsets.
pub(in crate::heap) fn resolve_in_place(
    addresses: &[u64],
    first_edge: Vec<u32>,
    walked: Walked,
) -> (Vec<u32>, Vec<u32>) {
    let nodes = addresses.len();
    let index = AddressIndex::new(addresses);
    // A walk in parts whose runs are not whole nodes' references (never, from
    // `fill_parts`) is resolved as one.
    let runs_fit = |runs: &[(usize, Vec<u64>)]| {
        runs.first().is_some_and(|(first, _)| *first == 0)
            && runs.iter().enumerate().all(|(k, (first, run))| {
                let next = runs.get(k + 1).map_or(nodes, |(next, _)| *next);
                *first <= next && next <= nodes && (first_edge[next] - first_edge[*first]) as usize == run.len()
            })
    };
    let walked = match walked {
        Walked::Runs(runs) if !runs_fit(&runs) => Walked::Whole(Walked::Runs(runs).into_whole()),
        walked => walked,
    };
    let total_edges = *first_edge.last().unwrap_or(&0) as usize;
    let mut resolved = vec![0u32; total_edges];
    // Runs of whole nodes, about equal in references, or the walk's own.
    let mut bounds = vec![0usize];
    let (whole, owned): (Vec<u64>, Vec<Vec<u64>>) = match walked {
        Walked::Whole(edges) => {
            let per_thread = edges.len().div_ceil(threads()).max(1);
            let mut next_cut = per_thread;
            for (node, &first) in first_edge.iter().enumerate().take(nodes) {
                if first as usize >= next_cut {
                    bounds.push(node);
                    next_cut = first as usize + per_thread;
                }
            }
            (edges, Vec::new())
        }
        Walked::Runs(runs) => {
            bounds.extend(runs.iter().skip(1).map(|(first, _)| *first));
            (Vec::new(), runs.into_iter().map(|(_, run)| run).collect())
        }
    };
    bounds.push(nodes);
    // Where each run's references start (and the end).
    let run_starts: Vec<usize> = bounds.iter().map(|&b| first_edge[b] as usize).collect();
    let run_edges: Vec<RunEdges<'_>> = if owned.is_empty() {
        run_starts.windows(2).map(|w| RunEdges::Borrowed(&whole[w[0]..w[1]])).collect()
    } else {
        owned.into_iter().map(RunEdges::Owned).collect()
    };
    let mut edge_offsets = first_edge;
    let kept: Vec<usize> = std::thread::scope(|scope| {
        let mut rest_resolved: &mut [u32] = &mut resolved;
        let mut rest_offsets: &mut [u32] = &mut edge_offsets[..nodes];
        let mut runs = Vec::with_capacity(bounds.len() - 1);
        for ((k, w), edges) in bounds.windows(2).enumerate().zip(run_edges) {
            let (from, to) = (w[0], w[1]);
            let (mine, others) = std::mem::take(&mut rest_resolved).split_at_mut(run_starts[k + 1] - run_starts[k]);
            let (offsets, other_offsets) = std::mem::take(&mut rest_offsets).split_at_mut(to - from);
            (rest_resolved, rest_offsets) = (others, other_offsets);
            let (index, base, end) = (&index, run_starts[k], run_starts[k + 1]);
            runs.push(scope.spawn(move || {
                let mut kept = 0usize;
                let mut near = NearHits::new();
                for node in from..to {
                    // A node's start is read before it is overwritten; the next node's is not
                    // overwritten yet.
                    let start = offsets[node - from] as usize;
                    let stop = if node + 1 < to { offsets[node + 1 - from] as usize } else { end };
                    offsets[node - from] = kept as u32;
                    near.start(node);
                    for &target in &edges[start - base..stop - base] {
                        // `kept` never passes the reference being read: the run compacts in place.
                        if let Some(t) = near.find(index, addresses, target) {
                            mine[kept] = t as u32;
                            kept += 1;
                        }
                    }
                }
                kept
            }));
        }
        runs.into_iter().map(joined).collect()
    });
    let mut total = 0usize;
    std::thread::scope(|scope| {
        // Freeing the addresses read (unmapping them) overlaps the moves.
        scope.spawn(move || drop(whole));
        for (k, w) in bounds.windows(2).enumerate() {
            if total != run_starts[k] {
                resolved.copy_within(run_starts[k]..run_starts[k] + kept[k], total);
            }
            // The run noted its offsets from its own start.
            if total != 0 {
                for offset in &mut edge_offsets[w[0]..w[1]] {
                    *offset += total as u32;
                }
            }
            total += kept[k];
        }
    });
    edge_offsets[nodes] = total as u32;
    edge_offsets.truncate(nodes + 1);
    resolved.truncate(total);
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
pub(super) enum AddressIndex {
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
pub(super) struct RankedWord {
    bits: u64,
    rank: u32,
}

const BLOCK_SHIFT: u32 = 21;
const WORDS_PER_BLOCK: usize = 1 << (BLOCK_SHIFT - 3 - 6);
const SAMPLE_EVERY: usize = 64;

impl AddressIndex {
    /// Indexes `addresses`, which are sorted, on all cores once there are many.
    pub(super) fn new(addresses: &[u64]) -> Self {
        let threads = threads_for(addresses.len());
        // Per chunk of addresses: its blocks, and whether every address is 8-byte aligned.
        let chunks: Vec<(Vec<u64>, bool)> = std::thread::scope(|scope| {
            let chunk = addresses.len().div_ceil(threads).max(1);
            let scans: Vec<_> = addresses
                .chunks(chunk)
                .map(|chunk| {
                    scope.spawn(move || {
                        let mut blocks: Vec<u64> = Vec::new();
                        let mut aligned = true;
                        for &a in chunk {
                            aligned &= a & 7 == 0;
                            if blocks.last() != Some(&(a >> BLOCK_SHIFT)) {
                                blocks.push(a >> BLOCK_SHIFT);
                            }
                        }
                        (blocks, aligned)
                    })
                })
                .collect();
            scans.into_iter().map(joined).collect()
        });
        let aligned = chunks.iter().all(|(_, aligned)| *aligned);
        let mut blocks: Vec<u64> = Vec::new();
        for block in chunks.into_iter().flat_map(|(blocks, _)| blocks) {
            if blocks.last() != Some(&block) {
                blocks.push(block);
            }
        }
        if !aligned || blocks.len() * 1000 > addresses.len().max(1000) * 16 {
            return AddressIndex::Sampled { samples: addresses.iter().step_by(SAMPLE_EVERY).copied().collect() };
        }
        let mut words = vec![RankedWord::default(); blocks.len() * WORDS_PER_BLOCK];
        // Runs of whole blocks, about equal in objects, one thread each: a word's rank is the
        // number of objects before it, the run's first object's position plus the run's own count.
        let mut runs: Vec<(usize, usize)> = vec![(0, 0)];
        for k in 1..threads {
            let block = addresses[addresses.len() * k / threads] >> BLOCK_SHIFT;
            let at = addresses.partition_point(|&a| a >> BLOCK_SHIFT < block);
            if runs.last().is_some_and(|&(last, _)| at > last) {
                runs.push((at, blocks.partition_point(|&b| b < block)));
            }
        }
        runs.push((addresses.len(), blocks.len()));
        std::thread::scope(|scope| {
            let mut rest: &mut [RankedWord] = &mut words;
            for w in runs.windows(2) {
                let ((from, first_block), (to, end_block)) = (w[0], w[1]);
                let (mine, others) =
                    std::mem::take(&mut rest).split_at_mut((end_block - first_block) * WORDS_PER_BLOCK);
                rest = others;
                let (addresses, blocks) = (&addresses[from..to], &blocks[first_block..end_block]);
                scope.spawn(move || {
                    let mut block = 0usize;
                    for &a in addresses {
                        while blocks[block] != a >> BLOCK_SHIFT {
                            block += 1;
                        }
                        let granule = ((a >> 3) as usize) & (WORDS_PER_BLOCK * 64 - 1);
                        mine[block * WORDS_PER_BLOCK + granule / 64].bits |= 1 << (granule % 64);
                    }
                    let mut rank = from as u32;
                    for w in mine.iter_mut() {
                        w.rank = rank;
                        rank += w.bits.count_ones();
                    }
                });
            }
        });
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
    pub(super) fn find_near(&self, addresses: &[u64], hint: usize, target: u64) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::{AddressIndex, NearHits, Walked, resolve_in_place};

    /// 200,000 objects whose references go to the next objects, anywhere, and to addresses
    /// that are no object (dropped), in runs that end anywhere: the parallel resolution keeps
    /// exactly the references a bisection finds, in order, with each node's offsets.
    #[test]
    fn references_resolve_as_bisection_resolves_them() {
        let n = 200_000u64;
        let addresses: Vec<u64> = (0..n).map(|i| 0x7f00_0000_0000 + i * 32 + (i % 3) * 8).collect();
        let mut x = 0x2545_f491u64;
        let mut first_edge = Vec::new();
        let mut edges = Vec::new();
        for i in 0..n {
            first_edge.push(edges.len() as u32);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..x % 5 {
                edges.push(match (x >> (8 + k)) % 4 {
                    0 => addresses[((i + 1) % n) as usize],
                    1 => addresses[((x >> 20) % n) as usize],
                    2 => addresses[((x >> 20) % n) as usize] + 8,
                    _ => x >> 16,
                });
            }
        }
        first_edge.push(edges.len() as u32);
        let mut want_offsets = vec![0u32];
        let mut want_targets = Vec::new();
        for i in 0..n as usize {
            for &e in &edges[first_edge[i] as usize..first_edge[i + 1] as usize] {
                want_targets.extend(addresses.binary_search(&e).ok().map(|t| t as u32));
            }
            want_offsets.push(want_targets.len() as u32);
        }
        assert!(want_targets.len() > 100_000 && want_targets.len() < edges.len() - 50_000);
        // As one vector, as the runs of a walk in parts, and as runs whose references do not
        // fit their nodes (resolved as one vector).
        let runs = |cuts: &[usize]| -> Walked {
            let mut bounds = cuts.to_vec();
            bounds.push(n as usize);
            Walked::Runs(
                bounds
                    .windows(2)
                    .map(|w| (w[0], edges[first_edge[w[0]] as usize..first_edge[w[1]] as usize].to_vec()))
                    .collect(),
            )
        };
        // The last reference of the first run moved to the second.
        let mut misfit = runs(&[0, 100_000]);
        if let Walked::Runs(r) = &mut misfit {
            let moved = r[0].1.pop().unwrap();
            r[1].1.insert(0, moved);
        }
        for (name, walked) in [
            ("whole", Walked::Whole(edges.clone())),
            ("runs", runs(&[0, 70_000, 70_000, 150_000])),
            ("one run", runs(&[0])),
            ("misfit", misfit),
        ] {
            let (offsets, targets) = resolve_in_place(&addresses, first_edge.clone(), walked);
            assert_eq!(offsets, want_offsets, "{name}");
            assert_eq!(targets, want_targets, "{name}");
        }
    }

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
            // From 65,536 objects on, the index is built on all cores.
            for n in [0u64, 1, 63, 64, 65, 200, 1000, 5000, 150_000] {
                let addresses: Vec<u64> = (0..n).map(at).collect();
                let index = AddressIndex::new(&addresses);
                let step = if n > 10_000 { 97 } else { 1 };
                let mut probes: Vec<u64> =
                    addresses.iter().step_by(step).flat_map(|&a| [a, a - 8, a + 8, a + 1]).collect();
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
