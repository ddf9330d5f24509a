use super::*;
use crate::heap::TypeStats;

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
