//! References from addresses to node positions: an index over the sorted addresses that
//! answers in constant time, guesses that spare it for references to nearby objects, and
//! the resolution of a whole walk's references on all cores.

/// Resolves every node's references (`edges`, in node order, each node's run of
/// `first_edge`-many) to node positions, on all cores: each thread resolves one slice of the
/// flat edge sequence where it lies, then one sequential pass drops what did not resolve and
/// builds the offsets. `first_edge` is per node, plus the end.
pub(super) fn resolve_in_place(addresses: &[u64], first_edge: Vec<u32>, edges: Vec<u64>) -> (Vec<u32>, Vec<u32>) {
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
    pub(super) fn new(addresses: &[u64]) -> Self {
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
