//! Property tests: random contention event sequences never panic, every reported cycle is
//! a real cycle of pending waits, and (with ordered timestamps) the graph agrees with a
//! naive model of the documented heuristics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use analysis::wait_for::{
    ContentionStart, ContentionStop, Deadlock, LockCreated, StackId, Timestamp, WaitForConfig, WaitForGraph,
};
use proptest::prelude::*;

const WINDOW_MS: u64 = 500;
const MS: u64 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Start { waiter: u64, lock: u64, owner: u64 },
    Stop { waiter: u64 },
    Created { lock: u64 },
    Check { extra_ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Few threads and locks so that cycles actually form.
    prop_oneof![
        5 => (1..7u64, 1..5u64, 0..7u64).prop_map(|(waiter, lock, owner)| Op::Start { waiter, lock, owner }),
        3 => (1..7u64).prop_map(|waiter| Op::Stop { waiter }),
        1 => (1..5u64).prop_map(|lock| Op::Created { lock }),
        2 => (0..1_000u64).prop_map(|extra_ms| Op::Check { extra_ms }),
    ]
}

fn apply(g: &mut WaitForGraph<StackId>, op: &Op, ts: Timestamp) {
    match *op {
        Op::Start { waiter, lock, owner } => g.on_start(ContentionStart {
            waiter,
            lock_id: lock,
            object: lock << 8,
            owner,
            stack: StackId(waiter),
            timestamp: ts,
        }),
        Op::Stop { waiter } => g.on_stop(ContentionStop { waiter, timestamp: ts }),
        Op::Created { lock } => g.on_lock_created(LockCreated { lock_id: lock, object: lock << 8 }),
        Op::Check { .. } => {}
    }
}

/// Every reported deadlock must be a cycle of pending waits in the graph's current state.
fn assert_real(g: &WaitForGraph<StackId>, found: &[Deadlock<StackId>], now: Timestamp) {
    for d in found {
        let n = d.cycle.len();
        assert!(n >= 2, "no self-loops: {d:?}");
        let members: BTreeSet<u64> = d.cycle.iter().map(|e| e.waiter_tid).collect();
        assert_eq!(members.len(), n, "members are distinct");
        for (i, edge) in d.cycle.iter().enumerate() {
            let wait = g.pending_wait(edge.waiter_tid).expect("member is waiting");
            assert_eq!(wait.lock_id, edge.lock_id);
            assert_eq!(g.lock_owner(edge.lock_id), Some(edge.owner_tid));
            assert_eq!(edge.owner_tid, d.cycle[(i + 1) % n].waiter_tid);
            assert_eq!(edge.waiter_stack, StackId(edge.waiter_tid));
        }
        assert!(now.saturating_since(d.since) >= Duration::from_millis(WINDOW_MS));
        for v in &d.victims {
            assert!(!members.contains(&v.tid), "victims are not members");
            assert_eq!(g.pending_wait(v.tid).map(|w| w.lock_id), Some(v.lock_id));
        }
    }
}

/// The documented heuristics, written as plainly as possible.
#[derive(Default)]
struct Model {
    waits: BTreeMap<u64, (u64, u64)>,  // waiter -> (lock, since)
    owners: BTreeMap<u64, (u64, u64)>, // lock -> (owner, changed)
}

impl Model {
    fn set_owner(&mut self, lock: u64, owner: u64, ts: u64) {
        if self.owners.get(&lock).map(|o| o.0) != Some(owner) {
            self.owners.insert(lock, (owner, ts));
        }
    }

    fn apply(&mut self, op: &Op, ts: u64) {
        match *op {
            Op::Start { waiter, lock, owner } => {
                // A new Start ends the previous wait like a Stop would.
                if let Some((previous, _)) = self.waits.remove(&waiter) {
                    self.set_owner(previous, waiter, ts);
                }
                self.waits.insert(waiter, (lock, ts));
                if owner != 0 && owner != waiter {
                    self.set_owner(lock, owner, ts);
                } else if self.owners.get(&lock).map(|o| o.0) == Some(waiter) {
                    self.owners.remove(&lock);
                    self.owners.insert(lock, (0, ts));
                }
            }
            Op::Stop { waiter } => {
                if let Some((lock, _)) = self.waits.remove(&waiter) {
                    self.set_owner(lock, waiter, ts);
                }
            }
            Op::Created { lock } => {
                if !self.waits.values().any(|w| w.0 == lock)
                    && let Some(o) = self.owners.get_mut(&lock)
                {
                    o.0 = 0;
                }
            }
            Op::Check { .. } => {}
        }
    }

    fn next(&self, tid: u64) -> Option<u64> {
        let (lock, _) = self.waits.get(&tid)?;
        let (owner, _) = self.owners.get(lock)?;
        (*owner != 0 && *owner != tid && self.waits.contains_key(owner)).then_some(*owner)
    }

    /// Confirmed cycles as sorted lock sets.
    fn confirmed(&self, now: u64) -> BTreeSet<Vec<u64>> {
        let mut out = BTreeSet::new();
        for &start in self.waits.keys() {
            // `start` is on a cycle if following successors comes back to it.
            let mut members = vec![start];
            let mut cur = self.next(start);
            while let Some(t) = cur {
                if t == start || members.len() > self.waits.len() {
                    break;
                }
                members.push(t);
                cur = self.next(t);
            }
            if cur != Some(start) {
                continue;
            }
            let since = members
                .iter()
                .map(|m| {
                    let (lock, wait_since) = self.waits[m];
                    wait_since.max(self.owners[&lock].1)
                })
                .max()
                .unwrap();
            if now.saturating_sub(since) >= WINDOW_MS * MS {
                let mut locks: Vec<u64> = members.iter().map(|m| self.waits[m].0).collect();
                locks.sort_unstable();
                out.insert(locks);
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Timestamps in any order (events from different threads' buffers interleave).
    #[test]
    fn any_order_never_panics_and_reports_only_real_cycles(
        ops in prop::collection::vec((op(), 0..3_000u64), 1..200)
    ) {
        let mut g: WaitForGraph<StackId> = WaitForGraph::default();
        for (op, ms) in &ops {
            let ts = Timestamp::from_nanos(ms * MS);
            apply(&mut g, op, ts);
            if let Op::Check { extra_ms } = op {
                let now = Timestamp::from_nanos((ms + extra_ms) * MS);
                assert_real(&g, &g.deadlocks(now), now);
                let _ = g.long_waits(now, Duration::from_millis(100));
            }
        }
        let end = Timestamp::from_nanos(10_000 * MS);
        assert_real(&g, &g.deadlocks(end), end);
    }

    /// Ordered timestamps: the graph reports exactly the model's confirmed cycles.
    #[test]
    fn ordered_events_match_the_model(
        ops in prop::collection::vec((op(), 0..300u64), 1..200)
    ) {
        let mut g: WaitForGraph<StackId> = WaitForGraph::default();
        let mut model = Model::default();
        let mut now_ms = 0;
        for (op, step_ms) in &ops {
            now_ms += step_ms;
            let ts = now_ms * MS;
            apply(&mut g, op, Timestamp::from_nanos(ts));
            model.apply(op, ts);
            if let Op::Check { extra_ms } = op {
                let now = ts + extra_ms * MS;
                let found = g.deadlocks(Timestamp::from_nanos(now));
                assert_real(&g, &found, Timestamp::from_nanos(now));
                let keys: BTreeSet<Vec<u64>> = found.iter().map(|d| d.key().0).collect();
                prop_assert_eq!(keys, model.confirmed(now));
            }
        }
    }

    /// Small caps: eviction never panics nor breaks the invariants.
    #[test]
    fn tiny_caps_keep_invariants(
        ops in prop::collection::vec((op(), 0..300u64), 1..300)
    ) {
        let config = WaitForConfig { max_waiters: 3, max_locks: 4, ..WaitForConfig::default() };
        let mut g: WaitForGraph<StackId> = WaitForGraph::new(config).unwrap();
        let mut now_ms = 0;
        for (op, step_ms) in &ops {
            now_ms += step_ms;
            apply(&mut g, op, Timestamp::from_nanos(now_ms * MS));
            let stats = g.stats();
            prop_assert!(stats.pending_waits <= 3);
            prop_assert!(stats.tracked_locks <= 4);
            if let Op::Check { extra_ms } = op {
                let now = Timestamp::from_nanos((now_ms + extra_ms) * MS);
                assert_real(&g, &g.deadlocks(now), now);
            }
        }
    }
}
