//! A heap walked in parts on several threads at once, each part writing its objects straight
//! into its own slice of the builder's node arrays.
//!
//! A dump's heap walk knows, from the walk that made its histogram, how many objects come
//! before each part: the parts' slices can then be set aside up front, and no part's objects
//! are copied again to join them. Each part keeps its references in a vector of its own,
//! which the resolution of references reads where it lies (one thread per part).

use super::{ObjectGraphBuilder, Sizes};

/// Where one part of a walk puts its objects, in address order: its slice of the node arrays
/// and its own references.
pub struct NodeSlots<'a> {
    /// The position in the whole graph of the first slot.
    first: usize,
    addresses: &'a mut [u64],
    sizes: &'a mut [u32],
    type_indexes: &'a mut [u32],
    edge_counts: &'a mut [u32],
    /// Type ids at or above this are not the walk's (see [`ObjectGraphBuilder::fill_parts`]).
    types: u32,
    filled: usize,
    /// An object came that had no slot or no known type: the part is not what was announced.
    refused: bool,
    /// `(position in the graph, size)` of objects of 4 GiB or more, ascending.
    large: Vec<(u32, u64)>,
    edges: Vec<u64>,
}

impl NodeSlots<'_> {
    /// One object and its references (appended by `references` to the vector it is given).
    /// Returns `false`, and keeps nothing, when the part has no slot left or the type id is not
    /// one of the walk's: the part met other objects than it was given slots for.
    pub fn push_with(&mut self, address: u64, size: u64, type_id: u64, references: impl FnOnce(&mut Vec<u64>)) -> bool {
        let i = self.filled;
        if i >= self.addresses.len() || type_id >= u64::from(self.types) {
            self.refused = true;
            return false;
        }
        let before = self.edges.len();
        references(&mut self.edges);
        self.addresses[i] = address;
        self.sizes[i] = match u32::try_from(size) {
            Ok(small) if small != u32::MAX => small,
            _ => {
                self.large.push(((self.first + i) as u32, size));
                u32::MAX
            }
        };
        self.type_indexes[i] = type_id as u32;
        // As `add_node`: no object holds 4 billion references; saturating keeps the count
        // consistent with what finish checks.
        self.edge_counts[i] = u32::try_from(self.edges.len() - before).unwrap_or(u32::MAX);
        self.filled += 1;
        true
    }

    /// Every slot is taken.
    pub fn is_full(&self) -> bool {
        self.filled == self.addresses.len()
    }

    fn complete(&self) -> bool {
        self.is_full() && !self.refused
    }
}

impl ObjectGraphBuilder {
    /// Fills an empty builder with the objects of a walk in parts, each part on a thread of
    /// its own: part `k` holds the objects at positions `starts[k]..starts[k + 1]` (the last
    /// entry of `starts` is the number of objects), in address order, and `fill(k, slots)`
    /// walks it. Type ids are `0..types` and become the type indexes unchanged.
    ///
    /// Returns `Ok(false)` when a part did not fill exactly its slots (the parts were not
    /// what the caller announced: it then walks again in one piece), and the first part's
    /// `Err` when parts failed; either way the builder is left as it was. `Ok(false)` without
    /// calling `fill` when the builder is not empty or `starts` is not ascending from 0.
    pub fn fill_parts<E: Send>(
        &mut self,
        types: u32,
        starts: &[usize],
        fill: impl Fn(usize, &mut NodeSlots<'_>) -> std::result::Result<(), E> + Sync,
    ) -> std::result::Result<bool, E> {
        let empty = self.addresses.is_empty()
            && self.edges.is_empty()
            && self.edge_runs.is_empty()
            && self.types.ids.is_empty();
        let ascending = starts.first() == Some(&0) && starts.windows(2).all(|w| w[0] <= w[1]);
        let Some(&nodes) = starts.last().filter(|_| empty && ascending) else { return Ok(false) };
        // Zeroed memory straight from the kernel: the parts' writes are the first touch.
        let mut addresses = vec![0u64; nodes];
        let mut sizes = vec![0u32; nodes];
        let mut type_indexes = vec![0u32; nodes];
        let mut edge_counts = vec![0u32; nodes];
        let parts = {
            let (mut a, mut s, mut t, mut e) =
                (&mut addresses[..], &mut sizes[..], &mut type_indexes[..], &mut edge_counts[..]);
            let mut parts = Vec::with_capacity(starts.len().saturating_sub(1));
            for w in starts.windows(2) {
                let n = w[1] - w[0];
                let (a0, a1) = std::mem::take(&mut a).split_at_mut(n);
                let (s0, s1) = std::mem::take(&mut s).split_at_mut(n);
                let (t0, t1) = std::mem::take(&mut t).split_at_mut(n);
                let (e0, e1) = std::mem::take(&mut e).split_at_mut(n);
                (a, s, t, e) = (a1, s1, t1, e1);
                parts.push(NodeSlots {
                    first: w[0],
                    addresses: a0,
                    sizes: s0,
                    type_indexes: t0,
                    edge_counts: e0,
                    types,
                    filled: 0,
                    refused: false,
                    large: Vec::new(),
                    edges: Vec::new(),
                });
            }
            parts
        };
        let fill = &fill;
        let results: Vec<(NodeSlots<'_>, std::result::Result<(), E>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .into_iter()
                .enumerate()
                .map(|(k, mut slots)| {
                    scope.spawn(move || {
                        let result = fill(k, &mut slots);
                        (slots, result)
                    })
                })
                .collect();
            handles.into_iter().map(crate::heap::joined).collect()
        });
        let mut complete = true;
        let mut large = Vec::new();
        let mut edge_runs: Vec<(usize, Vec<u64>)> = Vec::new();
        let mut announced = 0u64;
        for (slots, result) in results {
            result?;
            complete &= slots.complete();
            large.extend_from_slice(&slots.large);
            announced += slots.edge_counts.iter().map(|&c| u64::from(c)).sum::<u64>();
            edge_runs.push((slots.first, slots.edges));
        }
        if !complete {
            return Ok(false);
        }
        for id in 0..types {
            self.types.intern(u64::from(id));
        }
        self.addresses = addresses;
        self.sizes = Sizes { small: sizes, large };
        self.type_indexes = type_indexes;
        self.edge_counts = edge_counts;
        self.announced_edges = announced;
        self.edge_runs = edge_runs;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up walk: object `i` at `0x1000 + 32 i`, type `i % 3`, referencing the next
    /// object and (every fifth) the first; object 7 is 5 GiB.
    fn object(i: usize) -> (u64, u64, u64, Vec<u64>) {
        let address = 0x1000 + 32 * i as u64;
        let size = if i == 7 { 5 << 30 } else { 32 };
        let mut refs = vec![address + 32];
        if i.is_multiple_of(5) {
            refs.push(0x1000);
        }
        (address, size, (i % 3) as u64, refs)
    }

    fn sequential(n: usize) -> ObjectGraphBuilder {
        let mut b = ObjectGraphBuilder::new();
        for id in 0..3 {
            b.add_type(id, &format!("T{id}"));
        }
        for i in 0..n {
            let (address, size, type_id, refs) = object(i);
            b.add_node_with(address, size, type_id, |e| e.extend(refs));
        }
        b
    }

    fn in_parts(starts: &[usize]) -> (bool, ObjectGraphBuilder) {
        let mut b = ObjectGraphBuilder::new();
        let filled = b
            .fill_parts::<()>(3, starts, |k, slots| {
                for i in starts[k]..starts[k + 1] {
                    let (address, size, type_id, refs) = object(i);
                    assert!(slots.push_with(address, size, type_id, |e| e.extend(refs)));
                }
                Ok(())
            })
            .unwrap();
        for id in 0..3 {
            b.add_type(id, &format!("T{id}"));
        }
        (filled, b)
    }

    #[test]
    fn parts_build_the_graph_one_walk_builds() {
        let whole = sequential(40).finish().unwrap();
        for starts in [vec![0, 40], vec![0, 13, 40], vec![0, 0, 7, 8, 39, 40], vec![0, 20, 20, 40]] {
            let (filled, b) = in_parts(&starts);
            assert!(filled, "{starts:?}");
            let graph = b.finish().unwrap();
            assert_eq!(graph.addresses, whole.addresses, "{starts:?}");
            assert_eq!(graph.type_index, whole.type_index, "{starts:?}");
            assert_eq!(graph.sizes.iter().collect::<Vec<_>>(), whole.sizes.iter().collect::<Vec<_>>(), "{starts:?}");
            assert_eq!(graph.edge_offsets, whole.edge_offsets, "{starts:?}");
            assert_eq!(graph.edge_targets, whole.edge_targets, "{starts:?}");
            assert_eq!(graph.type_names, whole.type_names, "{starts:?}");
            assert_eq!(graph.size(crate::heap::NodeIndex(7)), 5 << 30);
        }
    }

    #[test]
    fn a_part_with_other_objects_than_announced_leaves_the_builder_empty() {
        // One object short, one too many, a type that is not the walk's.
        type Fill = dyn Fn(usize, &mut NodeSlots<'_>) -> Result<(), ()> + Sync;
        let fills: [&Fill; 3] = [
            &|k, slots| {
                for i in (0..20).skip(10 * k).take(if k == 1 { 9 } else { 10 }) {
                    let (a, s, t, r) = object(i);
                    slots.push_with(a, s, t, |e| e.extend(r));
                }
                Ok(())
            },
            &|k, slots| {
                for i in (0..21).skip(10 * k).take(11) {
                    let (a, s, t, r) = object(i);
                    slots.push_with(a, s, t, |e| e.extend(r));
                }
                Ok(())
            },
            &|k, slots| {
                for i in (0..20).skip(10 * k).take(10) {
                    let (a, s, _, r) = object(i);
                    slots.push_with(a, s, if i == 15 { 3 } else { 0 }, |e| e.extend(r));
                }
                Ok(())
            },
        ];
        for (which, fill) in fills.iter().enumerate() {
            let mut b = ObjectGraphBuilder::new();
            assert!(!b.fill_parts(3, &[0, 10, 20], fill).unwrap(), "case {which}");
            assert!(b.addresses.is_empty() && b.edge_runs.is_empty() && b.types.ids.is_empty(), "case {which}");
        }
        // A part's error is the caller's.
        let mut b = ObjectGraphBuilder::new();
        assert_eq!(b.fill_parts(3, &[0, 10, 20], |k, _| if k == 1 { Err("failed") } else { Ok(()) }), Err("failed"));
        // Not empty, or starts that do not ascend from 0: nothing is walked.
        let mut used = sequential(3);
        assert!(!used.fill_parts::<()>(3, &[0, 1], |_, _| panic!("walked")).unwrap());
        for starts in [&[][..], &[1, 2], &[0, 5, 3]] {
            assert!(!ObjectGraphBuilder::new().fill_parts::<()>(3, starts, |_, _| panic!("walked")).unwrap());
        }
    }
}
