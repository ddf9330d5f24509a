use std::time::Duration;

use super::*;

const MS: u64 = 1_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * MS)
}

/// Graph with the default 500 ms confirm window and `StackId` stacks (stack = tid, so
/// tests can check which stack went where).
fn graph() -> WaitForGraph<StackId> {
    WaitForGraph::default()
}

fn start(g: &mut WaitForGraph<StackId>, ms: u64, waiter: u64, lock_id: u64, owner: u64) {
    g.on_start(ContentionStart {
        waiter,
        lock_id,
        object: lock_id + 0x1000,
        owner,
        stack: StackId(waiter),
        timestamp: at(ms),
    });
}

fn stop(g: &mut WaitForGraph<StackId>, ms: u64, waiter: u64) {
    g.on_stop(ContentionStop { waiter, timestamp: at(ms) });
}

fn cycle_tids(d: &Deadlock<StackId>) -> Vec<u64> {
    d.cycle.iter().map(|e| e.waiter_tid).collect()
}

#[test]
fn two_thread_lock_inversion_is_reported_after_confirm_window() {
    let mut g = graph();
    // T1 holds A and wants B; T2 holds B and wants A.
    start(&mut g, 0, 1, 0xB, 2);
    start(&mut g, 10, 2, 0xA, 1);
    assert!(g.deadlocks(at(400)).is_empty(), "not confirmed yet");
    let found = g.deadlocks(at(510));
    assert_eq!(found.len(), 1);
    let d = &found[0];
    // Rotated to start at the smallest lock id: T2 waiting on A.
    assert_eq!(cycle_tids(d), vec![2, 1]);
    assert_eq!(d.cycle[0].lock_id, 0xA);
    assert_eq!(d.cycle[0].owner_tid, 1);
    assert_eq!(d.cycle[0].lock_object, 0xA + 0x1000);
    assert_eq!(d.cycle[0].waiter_stack, StackId(2));
    assert_eq!(d.cycle[1].lock_id, 0xB);
    assert_eq!(d.cycle[1].owner_tid, 2);
    assert_eq!(d.since, at(10));
    assert!(d.victims.is_empty());
    assert_eq!(d.key(), DeadlockKey(vec![0xA, 0xB]));
    assert_eq!(d.key().to_string(), "0xa+0xb");
}

#[test]
fn three_thread_cycle() {
    let mut g = graph();
    start(&mut g, 0, 1, 0x20, 2);
    start(&mut g, 1, 2, 0x30, 3);
    start(&mut g, 2, 3, 0x10, 1);
    let found = g.deadlocks(at(600));
    assert_eq!(found.len(), 1);
    let d = &found[0];
    assert_eq!(cycle_tids(d), vec![3, 1, 2]);
    for (i, edge) in d.cycle.iter().enumerate() {
        assert_eq!(edge.owner_tid, d.cycle[(i + 1) % 3].waiter_tid);
    }
    assert_eq!(d.key(), DeadlockKey(vec![0x10, 0x20, 0x30]));
}

#[test]
fn waiters_behind_a_deadlocked_lock_are_victims_not_deadlocks() {
    let mut g = graph();
    start(&mut g, 0, 1, 0xB, 2);
    start(&mut g, 0, 2, 0xA, 1);
    // Ten threads queue on A (held by T1), and one waits on C held by victim 100:
    // transitively stuck behind the cycle too.
    for tid in 100..110 {
        start(&mut g, 5, tid, 0xA, 1);
    }
    start(&mut g, 6, 200, 0xC, 100);
    let found = g.deadlocks(at(1_000));
    assert_eq!(found.len(), 1, "victims do not make deadlocks of their own");
    let d = &found[0];
    assert_eq!(d.cycle.len(), 2);
    let victims: Vec<u64> = d.victims.iter().map(|v| v.tid).collect();
    let mut expected: Vec<u64> = (100..110).collect();
    expected.push(200);
    assert_eq!(victims, expected);
    assert_eq!(d.victims[0].lock_id, 0xA);
    assert_eq!(d.victims[0].blocked_on, Some(1));
    assert_eq!(d.victims[0].stack, StackId(100));
    assert_eq!(d.victims[10].blocked_on, Some(100));
    // Victims are not reported as long waits either: the deadlock explains them.
    assert!(g.long_waits(at(1_000), Duration::from_millis(100)).is_empty());
}

#[test]
fn long_held_lock_without_cycle_is_a_long_wait_not_a_deadlock() {
    let mut g = graph();
    // T9 holds L and is not waiting on anything we can see (e.g. doing I/O).
    for tid in 1..=3 {
        start(&mut g, tid, tid, 0x50, 9);
    }
    assert!(g.deadlocks(at(60_000)).is_empty());
    let long = g.long_waits(at(60_000), Duration::from_secs(30));
    assert_eq!(long.len(), 1);
    assert_eq!(long[0].lock_id, 0x50);
    assert_eq!(long[0].owner_tid, Some(9));
    let waiters: Vec<u64> = long[0].waiters.iter().map(|w| w.tid).collect();
    assert_eq!(waiters, vec![1, 2, 3], "longest wait first");
    assert!(g.long_waits(at(60_000), Duration::from_secs(61)).is_empty());
}

#[test]
fn chain_into_a_non_waiting_owner_is_no_deadlock() {
    let mut g = graph();
    start(&mut g, 0, 1, 0xA, 2);
    start(&mut g, 0, 2, 0xB, 3);
    start(&mut g, 0, 3, 0xC, 4); // T4 runs.
    assert!(g.deadlocks(at(10_000)).is_empty());
}

#[test]
fn stale_owner_snapshot_is_corrected_by_a_newer_start() {
    let mut g = graph();
    // T1 waits on L, whose holder was T2 when T1 blocked.
    start(&mut g, 0, 1, 0x1, 2);
    // Meanwhile T2 released L and T3 took it without contention (no event). Later T2
    // blocks on M, which T1 holds: with the stale owner this looks like a cycle.
    start(&mut g, 100, 2, 0x2, 1);
    // Before the window closes, T4 blocks on L and the runtime names the real holder.
    start(&mut g, 200, 4, 0x1, 3);
    assert_eq!(g.lock_owner(0x1), Some(3));
    assert!(g.deadlocks(at(5_000)).is_empty());
}

#[test]
fn stale_owner_snapshot_is_corrected_by_a_stop() {
    let mut g = graph();
    start(&mut g, 0, 1, 0x1, 2);
    start(&mut g, 0, 5, 0x1, 2);
    // T5 acquired L: whatever T1 believed about T2 is outdated.
    stop(&mut g, 50, 5);
    start(&mut g, 100, 2, 0x2, 1);
    assert_eq!(g.lock_owner(0x1), Some(5));
    assert!(g.deadlocks(at(5_000)).is_empty());
}

#[test]
fn older_owner_information_arriving_late_does_not_override_newer() {
    let mut g = graph();
    start(&mut g, 100, 4, 0x1, 3);
    // A Start from an earlier moment, delivered late (another thread's buffer).
    start(&mut g, 50, 1, 0x1, 2);
    assert_eq!(g.lock_owner(0x1), Some(3));
    assert!(g.pending_wait(1).is_some(), "the wait itself is still real");
    // A late Stop for a wait older than the pending one is ignored.
    start(&mut g, 200, 7, 0x9, 0);
    stop(&mut g, 150, 7);
    assert!(g.pending_wait(7).is_some());
    assert_eq!(g.stats().stale_events, 1);
}

#[test]
fn waiter_cannot_own_the_lock_it_waits_on() {
    let mut g = graph();
    start(&mut g, 0, 1, 0x1, 0);
    stop(&mut g, 10, 1); // T1 acquired L.
    assert_eq!(g.lock_owner(0x1), Some(1));
    // T1 released it and blocks on it again; the owner field is unknown this time.
    start(&mut g, 20, 1, 0x1, 0);
    assert_eq!(g.lock_owner(0x1), None, "no self-loop from a stale belief");
    // An owner field naming the waiter itself is garbage too.
    start(&mut g, 30, 2, 0x3, 2);
    assert_eq!(g.lock_owner(0x3), None);
    assert!(g.deadlocks(at(10_000)).is_empty());
}

#[test]
fn cycle_broken_before_confirm_window_is_not_reported() {
    let mut g = graph();
    start(&mut g, 0, 1, 0xB, 2);
    start(&mut g, 10, 2, 0xA, 1);
    // T1's TryEnter times out: it stops waiting. (The heuristic then thinks T1 owns B,
    // which is exactly what the owner of A's next snapshot would correct.)
    stop(&mut g, 300, 1);
    assert!(g.deadlocks(at(600)).is_empty());
    assert!(g.deadlocks(at(60_000)).is_empty());
    assert!(g.pending_wait(1).is_none(), "stopped threads leave the graph");
}

#[test]
fn change_inside_the_cycle_restarts_the_confirm_window() {
    let mut g = graph();
    start(&mut g, 0, 1, 0xB, 2);
    start(&mut g, 10, 2, 0xA, 1);
    // A victim's snapshot re-confirms the same owner: no change, window keeps running.
    start(&mut g, 400, 3, 0xA, 1);
    assert_eq!(g.deadlocks(at(510)).len(), 1);
    // T1 woke up (lost Stop) and blocked again on B at 600: new edge, new window.
    start(&mut g, 600, 1, 0xB, 2);
    assert!(g.deadlocks(at(1_000)).is_empty());
    let d = g.deadlocks(at(1_100));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].since, at(600));
    assert_eq!(g.stats().replaced_waits, 1);
}

#[test]
fn the_same_deadlock_keeps_its_key_across_polls_and_event_orders() {
    let mut g1 = graph();
    start(&mut g1, 0, 1, 0xB, 2);
    start(&mut g1, 0, 2, 0xA, 1);
    let mut g2 = graph();
    start(&mut g2, 0, 2, 0xA, 1);
    start(&mut g2, 0, 1, 0xB, 2);
    let first = g1.deadlocks(at(1_000));
    let again = g1.deadlocks(at(9_000));
    start(&mut g1, 9_500, 42, 0xB, 2); // a new victim does not change the identity
    let later = g1.deadlocks(at(10_000));
    let other_order = g2.deadlocks(at(1_000));
    assert_eq!(first[0].key(), again[0].key());
    assert_eq!(first[0].key(), later[0].key());
    assert_eq!(first[0].key(), other_order[0].key());
    assert_eq!(first[0].cycle, other_order[0].cycle);
    assert_eq!(later[0].victims.len(), 1);
}

#[test]
fn lock_created_labels_the_lock_and_a_repeat_forgets_the_owner() {
    let mut g = graph();
    g.on_lock_created(LockCreated { lock_id: 0x7, object: 0xdead });
    start(&mut g, 0, 1, 0x7, 2);
    stop(&mut g, 5, 1);
    assert_eq!(g.lock_owner(0x7), Some(1));
    g.on_lock_created(LockCreated { lock_id: 0x7, object: 0xbeef });
    assert_eq!(g.lock_owner(0x7), None, "a new lock at a reused address");
}

#[test]
fn waiter_cap_evicts_old_non_cycle_waits_and_keeps_the_deadlock() {
    let config = WaitForConfig { max_waiters: 16, max_locks: 64, ..WaitForConfig::default() };
    let mut g: WaitForGraph<StackId> = WaitForGraph::new(config).unwrap();
    // The deadlock forms first, so its waits are the oldest.
    start(&mut g, 0, 1, 0xB, 2);
    start(&mut g, 0, 2, 0xA, 1);
    // Lots of waits whose Stop got lost.
    for tid in 100..200 {
        start(&mut g, tid, tid, 0x1000 + tid, 0);
    }
    let stats = g.stats();
    assert!(stats.pending_waits <= 16);
    assert!(stats.evicted_waits > 0);
    assert!(stats.tracked_locks <= 64);
    assert_eq!(g.deadlocks(at(10_000)).len(), 1);
    assert!(g.pending_wait(199).is_some(), "the newest wait is kept");
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = WaitForConfig { max_waiters: 10, max_locks: 10, ..WaitForConfig::default() };
    assert!(WaitForGraph::<StackId>::new(bad).is_err());
    let zero = WaitForConfig { max_waiters: 0, ..WaitForConfig::default() };
    assert!(WaitForGraph::<StackId>::new(zero).is_err());
}

#[test]
fn deadlock_serializes_to_json() {
    let mut g: WaitForGraph = WaitForGraph::default();
    g.on_start(ContentionStart {
        waiter: 1,
        lock_id: 0xB,
        object: 0xB0,
        owner: 2,
        stack: vec![0x10, 0x20],
        timestamp: at(0),
    });
    g.on_start(ContentionStart {
        waiter: 2,
        lock_id: 0xA,
        object: 0xA0,
        owner: 1,
        stack: vec![0x30],
        timestamp: at(0),
    });
    let d = g.deadlocks(at(1_000));
    let json = serde_json::to_value(&d[0]).unwrap();
    assert_eq!(json["cycle"][0]["waiter_tid"], 2);
    assert_eq!(json["cycle"][0]["waiter_stack"], serde_json::json!([0x30]));
    assert_eq!(json["since"], 0);
}
