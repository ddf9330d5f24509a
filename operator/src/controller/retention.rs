//! Retention: which snapshots of a policy go (beyond `maxCount`, or older than `maxAge`). Their
//! artifacts are deleted by the finalizer `dumpwatch.dev/artifacts` (see `storage`).

use api::{DumpSnapshot, Retention, SnapshotPhase};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// The snapshots (names) to delete now. `snapshots` are those of one policy; the newest
/// `max_count` are kept unless older than `max_age`. Work in flight (`Requested`, `Capturing`,
/// `Analyzing`) is never deleted; failed captures (nothing stored) are kept by their own count.
pub fn expired(snapshots: &[DumpSnapshot], retention: &Retention, now: Timestamp) -> Vec<String> {
    // Work in flight is neither deleted nor counted: a new request must not push out the last
    // analyzed snapshot before it has a result of its own (it may still fail). `Uploaded` counts
    // as settled: with analysis off a snapshot stays there for good.
    let settled = |s: &DumpSnapshot| {
        !matches!(
            s.status.as_ref().map(|st| st.phase).unwrap_or_default(),
            SnapshotPhase::Requested | SnapshotPhase::Capturing | SnapshotPhase::Analyzing
        )
    };
    // A capture that failed left nothing behind: such snapshots are counted among themselves,
    // so that a burst of failures never pushes out the last snapshot with evidence.
    let nothing_captured = |s: &DumpSnapshot| {
        s.spec.artifacts.is_empty() && s.status.as_ref().is_some_and(|st| st.phase == SnapshotPhase::Failed)
    };
    let created = |s: &DumpSnapshot| s.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut out = Vec::new();
    for failed in [false, true] {
        let mut kept: Vec<&DumpSnapshot> = snapshots
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none() && settled(s) && nothing_captured(s) == failed)
            .collect();
        // Newest first; the name breaks ties (creation times have one-second resolution).
        kept.sort_by(|a, b| created(b).cmp(&created(a)).then_with(|| b.name_any().cmp(&a.name_any())));
        out.extend(
            kept.iter()
                .enumerate()
                .filter(|(i, s)| {
                    let too_many = *i >= retention.max_count as usize;
                    let too_old =
                        now.duration_since(created(s)).unsigned_abs() > retention.max_age.std() && created(s) < now;
                    too_many || too_old
                })
                .map(|(_, s)| s.name_any()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{snapshot, ts};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(name: &str, created: i64, phase: &str) -> DumpSnapshot {
        let mut s = snapshot(name, phase);
        s.metadata.creation_timestamp = Some(Time(ts(created)));
        s
    }

    fn retention(count: u32, age_secs: u64) -> Retention {
        Retention { max_count: count, max_age: api::Duration::from_secs(age_secs) }
    }

    #[test]
    fn the_oldest_beyond_max_count_go() {
        let snaps = [at("a", 10, "Analyzed"), at("b", 20, "Analyzed"), at("c", 30, "Failed"), at("d", 40, "Analyzed")];
        assert_eq!(expired(&snaps, &retention(2, 3600), ts(100)), vec!["b", "a"]);
        assert!(expired(&snaps, &retention(10, 3600), ts(100)).is_empty());
    }

    #[test]
    fn snapshots_older_than_max_age_go_even_within_the_count() {
        let snaps = [at("old", 0, "Analyzed"), at("new", 5000, "Analyzed")];
        assert_eq!(expired(&snaps, &retention(10, 3600), ts(5000)), vec!["old"]);
    }

    #[test]
    fn work_in_flight_is_neither_deleted_nor_counted() {
        // A new request (c) must not push out the only analyzed snapshot (a) before it has a
        // result; once it settles, the older one goes.
        let snaps = [at("a", 10, "Analyzed"), at("b", 20, "Analyzing"), at("c", 30, "Requested")];
        assert!(expired(&snaps, &retention(1, 3600), ts(100)).is_empty());
        let later = [at("a", 10, "Analyzed"), at("b", 20, "Analyzing"), at("c", 30, "Analyzed")];
        assert_eq!(expired(&later, &retention(1, 3600), ts(100)), vec!["a"]);
        assert!(expired(&[at("b", 0, "Analyzing")], &retention(0, 1), ts(100_000)).is_empty());
    }

    #[test]
    fn snapshots_already_being_deleted_are_not_counted() {
        let mut going = at("z", 50, "Analyzed");
        going.metadata.deletion_timestamp = Some(Time(ts(60)));
        let snaps = [at("a", 10, "Analyzed"), going, at("b", 20, "Analyzed")];
        assert!(expired(&snaps, &retention(2, 3600), ts(100)).is_empty());
    }

    #[test]
    fn failed_captures_never_push_out_evidence_and_are_kept_by_the_same_count() {
        let failed = |name: &str, created: i64| {
            let mut s = at(name, created, "Failed");
            s.spec.artifacts.clear();
            s
        };
        let snaps = [at("evidence", 10, "Analyzed"), failed("f1", 20), failed("f2", 30), failed("f3", 40)];
        assert_eq!(expired(&snaps, &retention(1, 3600), ts(100)), vec!["f2", "f1"]);
        assert_eq!(expired(&snaps, &retention(1, 3600), ts(5000)), vec!["evidence", "f3", "f2", "f1"], "by age too");
    }

    #[test]
    fn same_second_ties_break_by_name() {
        let snaps = [at("x-2", 10, "Analyzed"), at("x-1", 10, "Analyzed")];
        assert_eq!(expired(&snaps, &retention(1, 3600), ts(100)), vec!["x-1"]);
    }
}
