//! Per-type object counts and bytes (`dumpheap -stat` / `dotnet-gcdump report`), and the
//! growth between two snapshots.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::type_name::{clean_type_name, unknown_type_name};

/// Objects of one type in a heap snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStats {
    /// Cleaned type name ([`clean_type_name`]).
    pub type_name: String,
    /// Number of objects.
    pub count: u64,
    /// Sum of the objects' sizes.
    pub bytes: u64,
}

/// How one type changed between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeGrowth {
    /// Cleaned type name.
    pub type_name: String,
    /// Newer count minus older count.
    pub count_delta: i64,
    /// Newer bytes minus older bytes.
    pub bytes_delta: i64,
}

/// Accumulates a histogram from a stream of objects, in memory proportional to the number
/// of distinct type ids: heaps have millions of objects but only thousands of types.
///
/// Type names may be announced before or after their objects (`BulkType` events can come
/// from earlier sessions or arrive during the GC), so ids stay unresolved until
/// [`finish`](Self::finish).
#[derive(Clone, Debug, Default)]
pub struct HeapHistogramBuilder {
    by_type_id: HashMap<u64, Accumulator>,
}

#[derive(Clone, Debug, Default)]
struct Accumulator {
    name: Option<String>,
    count: u64,
    bytes: u64,
}

impl HeapHistogramBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names a type id (a MethodTable address). `name` is the raw `BulkType` name and is
    /// cleaned here; the latest announcement wins.
    pub fn add_type(&mut self, type_id: u64, name: &str) {
        self.by_type_id.entry(type_id).or_default().name = Some(clean_type_name(name));
    }

    /// Counts one object.
    pub fn add_object(&mut self, type_id: u64, size: u64) {
        let acc = self.by_type_id.entry(type_id).or_default();
        acc.count += 1;
        acc.bytes = acc.bytes.saturating_add(size);
    }

    /// Distinct type ids seen so far (the builder's memory is proportional to this).
    pub fn type_ids(&self) -> usize {
        self.by_type_id.len()
    }

    /// Resolves names and merges type ids that share a name (the same generic
    /// instantiation loaded twice, or names that only differ in what cleaning removes),
    /// so histograms of different processes or snapshots compare by name. Types announced
    /// but without objects are left out.
    pub fn finish(self) -> HeapHistogram {
        let mut by_name: HashMap<String, TypeStats> = HashMap::new();
        for (type_id, acc) in self.by_type_id {
            if acc.count == 0 {
                continue;
            }
            let name = acc.name.unwrap_or_else(|| unknown_type_name(type_id));
            let stats = by_name.entry(name).or_insert_with_key(|name| TypeStats {
                type_name: name.clone(),
                count: 0,
                bytes: 0,
            });
            stats.count += acc.count;
            stats.bytes = stats.bytes.saturating_add(acc.bytes);
        }
        HeapHistogram::from_types(by_name.into_values().collect())
    }
}

/// Per-type statistics of one heap snapshot, largest bytes first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapHistogram {
    types: Vec<TypeStats>,
    total_bytes: u64,
    total_objects: u64,
}

impl HeapHistogram {
    /// Builds a histogram from per-type rows (one per name), sorting them by bytes desc,
    /// then count desc, then name so equal rows have a stable order.
    pub fn from_types(mut types: Vec<TypeStats>) -> Self {
        types.sort_by(|a, b| {
            b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)).then_with(|| a.type_name.cmp(&b.type_name))
        });
        let total_bytes = types.iter().map(|t| t.bytes).fold(0, u64::saturating_add);
        let total_objects = types.iter().map(|t| t.count).sum();
        HeapHistogram { types, total_bytes, total_objects }
    }

    /// All types, largest first.
    pub fn types(&self) -> &[TypeStats] {
        &self.types
    }

    /// Sum of all object sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of objects.
    pub fn total_objects(&self) -> u64 {
        self.total_objects
    }

    /// The `n` largest types by bytes.
    pub fn top(&self, n: usize) -> &[TypeStats] {
        &self.types[..n.min(self.types.len())]
    }

    /// The row of a type, by cleaned name.
    pub fn by_name(&self, type_name: &str) -> Option<&TypeStats> {
        self.types.iter().find(|t| t.type_name == type_name)
    }

    /// What grew (or shrank) since `older`: one row per type whose count or bytes changed,
    /// largest byte growth first (shrinking types last), then count growth, then name.
    pub fn diff(&self, older: &HeapHistogram) -> Vec<TypeGrowth> {
        let old: HashMap<&str, &TypeStats> = older.types.iter().map(|t| (t.type_name.as_str(), t)).collect();
        let mut growth: Vec<TypeGrowth> = self
            .types
            .iter()
            .map(|new| {
                let (count, bytes) = old.get(new.type_name.as_str()).map_or((0, 0), |o| (o.count, o.bytes));
                TypeGrowth {
                    type_name: new.type_name.clone(),
                    count_delta: delta(new.count, count),
                    bytes_delta: delta(new.bytes, bytes),
                }
            })
            .collect();
        // Types that disappeared entirely.
        let current: std::collections::HashSet<&str> = self.types.iter().map(|t| t.type_name.as_str()).collect();
        growth.extend(older.types.iter().filter(|t| !current.contains(t.type_name.as_str())).map(|t| TypeGrowth {
            type_name: t.type_name.clone(),
            count_delta: delta(0, t.count),
            bytes_delta: delta(0, t.bytes),
        }));
        growth.retain(|g| g.count_delta != 0 || g.bytes_delta != 0);
        growth.sort_by(|a, b| {
            b.bytes_delta
                .cmp(&a.bytes_delta)
                .then(b.count_delta.cmp(&a.count_delta))
                .then_with(|| a.type_name.cmp(&b.type_name))
        });
        growth
    }
}

/// `new - old` as i64, saturating: heap totals never come near 2^63 in practice.
fn delta(new: u64, old: u64) -> i64 {
    let d = i128::from(new) - i128::from(old);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, count: u64, bytes: u64) -> TypeStats {
        TypeStats { type_name: name.to_string(), count, bytes }
    }

    #[test]
    fn types_resolve_whether_announced_before_or_after_objects() {
        let mut b = HeapHistogramBuilder::new();
        b.add_type(0x10, "System.String");
        b.add_object(0x10, 30);
        b.add_object(0x20, 100);
        b.add_object(0x10, 40);
        b.add_type(0x20, "System.Collections.Generic.List`1[Shop.Customer]");
        b.add_object(0x30, 24); // never announced
        b.add_type(0x40, "Unused"); // announced, no objects
        let h = b.finish();
        assert_eq!(
            h.types(),
            &[
                stats("System.Collections.Generic.List<Shop.Customer>", 1, 100),
                stats("System.String", 2, 70),
                stats("Type(0x30)", 1, 24),
            ]
        );
        assert_eq!(h.total_bytes(), 194);
        assert_eq!(h.total_objects(), 4);
        assert_eq!(h.top(1)[0].type_name, "System.Collections.Generic.List<Shop.Customer>");
        assert_eq!(h.top(10).len(), 3);
        assert_eq!(h.by_name("System.String").map(|t| t.count), Some(2));
        assert!(h.by_name("Unused").is_none());
    }

    #[test]
    fn sorted_by_bytes_then_count_and_same_names_merge() {
        let mut b = HeapHistogramBuilder::new();
        b.add_type(1, "A");
        b.add_type(2, "B");
        b.add_type(3, "A"); // same name, other MethodTable (e.g. another load context)
        for _ in 0..2 {
            b.add_object(1, 10);
        }
        b.add_object(3, 10);
        b.add_object(2, 30);
        let h = b.finish();
        assert_eq!(h.types(), &[stats("A", 3, 30), stats("B", 1, 30)]);
    }

    #[test]
    fn diff_reports_growth_first_and_includes_vanished_types() {
        let older =
            HeapHistogram::from_types(vec![stats("Customer", 10, 400), stats("Gone", 5, 50), stats("Same", 1, 8)]);
        let newer = HeapHistogram::from_types(vec![
            stats("Customer", 1_010, 40_400),
            stats("Same", 1, 8),
            stats("String", 1_000, 32_000),
        ]);
        let d = newer.diff(&older);
        let rows: Vec<(&str, i64, i64)> =
            d.iter().map(|g| (g.type_name.as_str(), g.count_delta, g.bytes_delta)).collect();
        assert_eq!(rows, vec![("Customer", 1_000, 40_000), ("String", 1_000, 32_000), ("Gone", -5, -50),]);
    }

    #[test]
    fn histogram_round_trips_through_json() {
        let h = HeapHistogram::from_types(vec![stats("A", 1, 2)]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"types":[{"type_name":"A","count":1,"bytes":2}],"total_bytes":2,"total_objects":1}"#);
        assert_eq!(serde_json::from_str::<HeapHistogram>(&json).unwrap(), h);
    }
}
