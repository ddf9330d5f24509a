use super::*;
use crate::heap::TypeStats;
use crate::heap::{Confidence, LeakPattern};

/// A snapshot at `minutes` with `(type, count, bytes per instance)` rows.
fn snap(minutes: f64, rows: &[(&str, u64, u64)], holders: &[(&str, &str)]) -> HeapSummary {
    HeapSummary {
        taken_at_seconds: minutes * 60.0,
        histogram: HeapHistogram::from_types(
            rows.iter().map(|&(n, c, b)| TypeStats { type_name: n.into(), count: c, bytes: c * b }).collect(),
        ),
        holders: holders.iter().map(|&(t, h)| (t.to_string(), h.to_string())).collect(),
    }
}

const CUSTOMER_PATH: &str =
    "static App.Processor.Current → App.CustomerCache → List<App.Customer> → App.Customer[] → App.Customer";
const NAME_PATH: &str = "static App.Processor.Current → App.CustomerCache → List<App.Customer> → App.Customer[] → App.Customer → System.String";

/// Every 10 minutes: customers leak by 20,000 (plus their name strings), a bounded cache stays
/// at its 5,000 entries, a lookup table stays at 50,000 rows, request garbage goes up and down.
fn service(leaked: &[u64]) -> Vec<HeapSummary> {
    let churn = [3000, 9000, 1000, 7000, 2000, 8000];
    leaked
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            snap(
                10.0 * i as f64,
                &[
                    ("App.Customer", n, 32),
                    ("System.String", n + 50_000, 64),
                    ("App.CacheEntry", 5000, 1056),
                    ("App.Country", 50_000, 120),
                    ("App.RequestBuffer", churn[i % churn.len()], 4096),
                ],
                &[("App.Customer", CUSTOMER_PATH), ("System.String", NAME_PATH)],
            )
        })
        .collect()
}

#[test]
fn a_type_growing_across_k_intervals_is_a_verdict_with_rate_and_holder() {
    let v = growth_verdicts(&service(&[100_000, 120_000, 140_000, 160_000]), &GrowthThresholds::default());
    assert_eq!(v.len(), 1, "{v:#?}");
    let c = &v[0];
    assert_eq!(c.type_name, "App.Customer");
    assert_eq!((c.intervals, c.first_count, c.last_count), (3, 100_000, 160_000));
    assert_eq!(c.count_per_hour, 120_000.0);
    // With the names the customers hold.
    assert_eq!(c.bytes_growth, 60_000 * (32 + 64));
    assert_eq!(c.holder.as_deref(), Some(CUSTOMER_PATH));
    assert_eq!(
        c.reason,
        format!(
            "`App.Customer` grew in each of the last 3 intervals between heap snapshots, from 100,000 to 160,000 \
             instances (+120,000 per hour, +11.0 MiB per hour with what they hold), held by {CUSTOMER_PATH}, while \
             the rest of the heap stayed steady"
        )
    );
}

#[test]
fn too_few_snapshots_or_a_broken_run_give_no_verdict() {
    let t = GrowthThresholds::default();
    assert!(growth_verdicts(&service(&[100_000, 120_000, 140_000]), &t).is_empty(), "3 snapshots: 2 intervals");
    assert!(growth_verdicts(&service(&[100_000, 120_000, 119_000, 140_000]), &t).is_empty(), "dipped once");
    assert!(growth_verdicts(&service(&[100_000, 100_200, 100_400, 100_600]), &t).is_empty(), "+600: noise");
}

#[test]
fn the_negatives_stay_silent() {
    let t = GrowthThresholds::default();
    // No leak at all: the bounded cache, the lookup table and the churn alone.
    assert!(growth_verdicts(&service(&[0, 0, 0, 0, 0, 0]), &t).is_empty());
    // A bounded cache that filled up and stays full.
    let filling: Vec<HeapSummary> = [1000u64, 3000, 5000, 5000, 5000, 5000]
        .iter()
        .enumerate()
        .map(|(i, &n)| snap(10.0 * i as f64, &[("App.CacheEntry", n, 1056), ("App.Country", 50_000, 120)], &[]))
        .collect();
    assert!(growth_verdicts(&filling, &t).is_empty());
    // A load ramp that grows everything alike is not one type leaking.
    let ramp: Vec<HeapSummary> = (0..4u64)
        .map(|i| {
            let rows: Vec<(String, u64, u64)> =
                (0..10).map(|k| (format!("App.T{k}"), 10_000 + i * 2_000, 1000)).collect();
            let rows: Vec<(&str, u64, u64)> = rows.iter().map(|(n, c, b)| (n.as_str(), *c, *b)).collect();
            snap(10.0 * i as f64, &rows, &[])
        })
        .collect();
    assert!(growth_verdicts(&ramp, &t).is_empty());
}

#[test]
fn a_small_type_holding_big_growing_ones_is_the_verdict() {
    // 2,000 orders of 32 bytes per interval, each with a 512-byte buffer: the orders alone
    // add too few bytes, the buffers are theirs.
    let orders: Vec<HeapSummary> = (0..4u64)
        .map(|i| {
            let n = 5000 + 2000 * i;
            snap(
                10.0 * i as f64,
                &[("App.Order", n, 32), ("System.Byte[]", n + 100, 536)],
                &[
                    ("App.Order", "static Open → Dictionary → Entry[] → App.Order"),
                    ("System.Byte[]", "static Open → Dictionary → Entry[] → App.Order → System.Byte[]"),
                ],
            )
        })
        .collect();
    let v = growth_verdicts(&orders, &GrowthThresholds::default());
    let names: Vec<&str> = v.iter().map(|v| v.type_name.as_str()).collect();
    assert_eq!(names, ["App.Order"]);
    assert_eq!(v[0].bytes_growth, 6000 * (32 + 536));
}

#[test]
fn a_longer_run_is_reported_whole_and_needs_no_holder() {
    let mut s = service(&[20_000, 40_000, 60_000, 80_000, 100_000]);
    for x in &mut s {
        x.holders.clear();
    }
    let v = growth_verdicts(&s, &GrowthThresholds::default());
    // Without holders, the names of the customers cannot be told apart from the customers.
    let names: Vec<&str> = v.iter().map(|v| v.type_name.as_str()).collect();
    assert_eq!(names, ["System.String", "App.Customer"]);
    assert_eq!((v[1].intervals, v[1].first_count, v[1].holder.as_deref()), (4, 20_000, None));
}

#[test]
fn holders_are_wanted_only_while_some_type_keeps_rising() {
    let t = GrowthThresholds::default();
    let s = service(&[100_000, 120_000, 140_000]);
    assert!(!wants_holders(&s[..1], &t), "one snapshot: nothing rose yet");
    assert!(!wants_holders(&s[..2], &t), "one interval of growth is not yet K-1 = 2");
    assert!(wants_holders(&s, &t), "two intervals: the next snapshot may complete a run of three");
    let steady = service(&[0, 0, 0, 0]);
    assert!(!wants_holders(&steady, &t), "a full cache and a loaded table never need the graph");
}

#[test]
fn a_summary_names_the_holder_of_each_rising_type_from_the_graph() {
    use crate::heap::{ObjectGraphBuilder, RootKind};
    // static Open → Dict → Entry[] → Order ×n, each Order → Byte[]; a static table of
    // countries that does not change.
    let graph = |orders: u64| {
        let mut b = ObjectGraphBuilder::new();
        for (id, name) in [
            (1, "Dict"),
            (2, "Entry[]"),
            (3, "App.Order"),
            (4, "System.Byte[]"),
            (5, "App.Country"),
            (6, "App.Country[]"),
        ] {
            b.add_type(id, name);
        }
        b.add_node(0x100, 64, 1, 1);
        b.add_edge(0x200);
        b.add_node(0x200, 16 + 8 * orders, 2, orders);
        b.add_edges((0..orders).map(|i| 0x1000 + i * 0x100));
        for i in 0..orders {
            b.add_node(0x1000 + i * 0x100, 32, 3, 1);
            b.add_edge(0x1000 + i * 0x100 + 0x40);
            b.add_node(0x1000 + i * 0x100 + 0x40, 536, 4, 0);
        }
        // A constant table of 50 rows, each with a buffer too: more buffers than orders.
        b.add_node(0x90_0000, 16 + 8 * 50, 6, 50);
        b.add_edges((0..50).map(|i| 0xa0_0000 + i * 0x100));
        for i in 0..50 {
            b.add_node(0xa0_0000 + i * 0x100, 120, 5, 1);
            b.add_edge(0xa0_0000 + i * 0x100 + 0x80);
            b.add_node(0xa0_0000 + i * 0x100 + 0x80, 536, 4, 0);
        }
        b.add_root(0x100, RootKind::Static { type_name: String::new(), field_name: "Open".into() });
        b.add_root(0x90_0000, RootKind::Static { type_name: String::new(), field_name: "ByCode".into() });
        b.finish().unwrap()
    };
    let (g1, g2) = (graph(10), graph(30));
    let first = summarize(0.0, g1.histogram(), None, None, 10);
    assert!(first.holders.is_empty(), "no graph, no holders");
    let second = summarize(60.0, g2.histogram(), Some(&g2), Some(&first), 10);
    let holders: Vec<(&str, &str)> = second.holders.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        holders,
        [
            ("App.Order", "static Open → Dict → Entry[] → App.Order"),
            ("System.Byte[]", "static Open → Dict → Entry[] → App.Order → System.Byte[]"),
        ],
        "only the types that rose, the buffers by the path through the rising orders (the table holds more)"
    );
    assert_eq!(summarize(60.0, g2.histogram(), Some(&g2), Some(&first), 1).holders.len(), 1, "at most `limit`");
}

#[test]
fn the_top_growing_types_span_the_first_to_the_last_snapshot() {
    let s = service(&[100_000, 120_000, 140_000, 160_000]);
    let top = top_growing(&s, 10);
    let rows: Vec<(&str, i64, i64)> =
        top.iter().map(|g| (g.type_name.as_str(), g.count_delta, g.bytes_delta)).collect();
    // The request buffers went from 3,000 to 7,000 between these two: they grew too, by bytes
    // the most; growth is not yet a verdict.
    assert_eq!(
        rows,
        [
            ("App.RequestBuffer", 4000, 4000 * 4096),
            ("System.String", 60_000, 60_000 * 64),
            ("App.Customer", 60_000, 60_000 * 32)
        ]
    );
    assert_eq!(top_growing(&s, 1).len(), 1);
    assert!(top_growing(&service(&[5, 5]), 10).iter().all(|g| g.type_name == "App.RequestBuffer"));
    assert!(top_growing(&[], 10).is_empty());
}

#[test]
fn a_verdict_is_a_growth_suspect_of_a_findings_document() {
    let s = service(&[100_000, 120_000, 140_000, 160_000]);
    let v = growth_verdicts(&s, &GrowthThresholds::default());
    let last = &s[3].histogram;
    let suspect = v[0].suspect(last);
    assert_eq!((suspect.pattern, suspect.confidence), (LeakPattern::Growth, Confidence::High));
    assert_eq!(suspect.root, "static App.Processor.Current");
    assert_eq!(
        suspect.path,
        ["App.CustomerCache", "List<App.Customer>", "App.Customer[]", "App.Customer"].map(String::from)
    );
    assert_eq!((suspect.instances, suspect.retained_bytes), (160_000, 160_000 * 32));
    assert_eq!(suspect.reason, v[0].reason);
    let source = crate::findings::Source {
        kind: "heap_snapshots".into(),
        path: String::new(),
        runtime_version: Some("8.0.4".into()),
        dac: None,
        threads: 0,
    };
    let doc = crate::findings::from_growth(source, last, v.clone(), 3);
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["schema"], "dumpwatch.findings");
    assert_eq!(json["summary"]["leak_suspects"], 1);
    assert_eq!(json["leak_suspects"][0]["pattern"], "growth");
    assert_eq!(json["growth_verdicts"][0]["type_name"], "App.Customer");
    assert_eq!(json["heap"]["top_types"].as_array().unwrap().len(), 3);
    let back: crate::findings::Findings = serde_json::from_value(json).unwrap();
    assert_eq!(back, doc);
}
