//! Live Monitor-deadlock detection from .NET 8+ contention events.
//!
//! The runtime fires `ContentionStart_V2` when a thread blocks on a contended Monitor
//! (carrying the lock id, the locked object and a racy snapshot of the holder's OS thread
//! id) and `ContentionStop` when the wait ends, also on timeout. [`WaitForGraph`] keeps the
//! pending wait of every blocked thread and the last known owner of every lock, and finds
//! cycles `waiter → lock → owner → lock → … → waiter`.
//!
//! Everything here works on the caller's timestamps: there is no clock inside.
//!
//! # Ownership heuristics (the runtime never tells us who holds a lock *now*)
//! - A `ContentionStart` names the holder as the runtime saw it when the waiter blocked.
//!   The most recent information wins, by event timestamp, so a late-arriving old event
//!   cannot overwrite a newer snapshot.
//! - A `ContentionStop` most likely means the waiter acquired the lock, so it becomes the
//!   owner. When the wait actually timed out this is wrong, but the next `ContentionStart`
//!   on that lock carries a fresher snapshot and corrects it. A new Start from a thread
//!   that still has a pending wait means its Stop was lost; it counts as that Stop.
//! - A thread that starts waiting on a lock cannot hold it (Monitor is re-entrant, so it
//!   would not have blocked): if we believed it did, the owner becomes unknown.
//! - A second `ContentionLockCreated` for a tracked lock id means a new lock was created
//!   at a reused address, so the old owner information is dropped.
//!
//! A cycle built from such evidence is only reported after it stayed unchanged for the
//! confirm window: in a real deadlock nothing moves, whereas a stale snapshot is usually
//! corrected by the next event on that lock.
//!
//! # Bounded memory
//! Threads leave the graph when their wait stops. At most `max_waiters` pending waits and
//! `max_locks` locks are kept; see [`WaitForConfig`] for what is evicted first.

mod cycles;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A trace timestamp in nanoseconds on the caller's monotonic clock (e.g. the EventPipe
/// event timestamp converted with the trace's QPC frequency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A stack identifier the caller interned itself, for callers that do not want the graph
/// to hold frame vectors (use `WaitForGraph<StackId>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StackId(pub u64);

/// `ContentionStart_V2`: `waiter` blocked on a contended lock.
///
/// `S` is the waiter's managed stack: frame addresses (`Vec<u64>`, the default), a
/// [`StackId`], or anything else the caller wants echoed back in reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentionStart<S = Vec<u64>> {
    /// OS thread id of the waiting thread (the event header's thread id).
    pub waiter: u64,
    /// `LockID`: the runtime's lock (AwareLock) address, stable while the lock lives.
    pub lock_id: u64,
    /// `AssociatedObjectID`: the locked object's address at that moment (moves with GCs).
    pub object: u64,
    /// `LockOwnerThreadID`: OS thread id of the holder, read without synchronization;
    /// 0 = unknown.
    pub owner: u64,
    /// The waiter's stack.
    pub stack: S,
    /// When the event fired.
    pub timestamp: Timestamp,
}

/// `ContentionStop`: `waiter`'s wait ended (lock acquired or wait timed out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentionStop {
    /// OS thread id of the thread that was waiting.
    pub waiter: u64,
    /// When the event fired.
    pub timestamp: Timestamp,
}

/// `ContentionLockCreated`: first contention on a lock seen by this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockCreated {
    /// The lock's id, as in [`ContentionStart::lock_id`].
    pub lock_id: u64,
    /// The locked object's address.
    pub object: u64,
}

/// Tuning of a [`WaitForGraph`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForConfig {
    /// How long a cycle must stay unchanged before it is reported (default 500 ms).
    pub confirm_window: Duration,
    /// Most pending waits kept (default 16 384). When a new waiter would exceed it, the
    /// oldest eighth of the waits *not on a cycle* is evicted: a deadlock's members are
    /// exactly the oldest waits, so plain oldest-first would throw away the evidence,
    /// whereas waits whose Stop event was lost also end up old and must go eventually.
    /// If every wait is on a cycle, the new Start is dropped.
    pub max_waiters: usize,
    /// Most locks kept (default 65 536, at least `max_waiters + 1`). Locks nobody waits
    /// on are kept only to remember their owner; the least recently touched eighth of
    /// those is evicted when the cap is exceeded. Locks with waiters are never evicted.
    pub max_locks: usize,
}

impl Default for WaitForConfig {
    fn default() -> Self {
        WaitForConfig { confirm_window: Duration::from_millis(500), max_waiters: 16_384, max_locks: 65_536 }
    }
}

/// A thread's pending wait, between its Start and Stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingWait<S = Vec<u64>> {
    /// The lock waited on.
    pub lock_id: u64,
    /// The locked object's address as of the Start.
    pub object: u64,
    /// The waiter's stack from the Start.
    pub stack: S,
    /// Start timestamp.
    pub since: Timestamp,
}

/// What we know about one lock.
#[derive(Clone, Debug)]
struct LockState {
    /// Latest known address of the locked object (0 = unknown).
    object: u64,
    /// Last known holder, 0 = unknown.
    owner: u64,
    /// Timestamp of the newest ownership information, so older events cannot override it.
    owner_seen: Timestamp,
    /// When `owner` last changed value: a cycle through this lock is no older than this.
    owner_changed: Timestamp,
    /// Pending waits on this lock; a lock with waiters is never evicted.
    waiters: u32,
    /// Logical time of the last event touching the lock, for LRU eviction.
    last_touch: u64,
}

/// Counters about the input's quality and the evictions, for metrics and debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaitForStats {
    /// Pending waits currently tracked.
    pub pending_waits: usize,
    /// Locks currently tracked.
    pub tracked_locks: usize,
    /// Starts that replaced a pending wait whose Stop never came (lost event).
    pub replaced_waits: u64,
    /// Events ignored because newer information about the same thread was already seen.
    pub stale_events: u64,
    /// Stops without a pending wait (their Start was lost, evicted or came before us).
    pub unmatched_stops: u64,
    /// Pending waits evicted by the `max_waiters` cap.
    pub evicted_waits: u64,
    /// Starts dropped because the cap was reached and every wait was on a cycle.
    pub dropped_starts: u64,
    /// Locks evicted by the `max_locks` cap.
    pub evicted_locks: u64,
}

/// One edge of a deadlock cycle: `waiter_tid` waits on `lock_id`, held by `owner_tid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitEdge<S = Vec<u64>> {
    /// The blocked thread (OS tid).
    pub waiter_tid: u64,
    /// The lock it waits on.
    pub lock_id: u64,
    /// The locked object's latest known address.
    pub lock_object: u64,
    /// The lock's holder: the waiter of the next edge.
    pub owner_tid: u64,
    /// Where the waiter is blocked.
    pub waiter_stack: S,
    /// When the waiter blocked.
    pub waiting_since: Timestamp,
}

/// A thread blocked on a lock but not itself on a cycle: a deadlock's victim, or a waiter
/// behind a long-held lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockedThread<S = Vec<u64>> {
    /// The blocked thread (OS tid).
    pub tid: u64,
    /// The lock it waits on.
    pub lock_id: u64,
    /// The lock's last known holder, if known.
    pub blocked_on: Option<u64>,
    /// Where it is blocked.
    pub stack: S,
    /// When it blocked.
    pub waiting_since: Timestamp,
}

/// Identity of a deadlock that survives repeated detection: its locks' ids, sorted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeadlockKey(pub Vec<u64>);

impl std::fmt::Display for DeadlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, lock) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{lock:#x}")?;
        }
        Ok(())
    }
}

/// A confirmed cycle of threads, each waiting on a lock held by the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Deadlock<S = Vec<u64>> {
    /// The cycle, starting at the edge with the smallest lock id so the order is stable.
    pub cycle: Vec<WaitEdge<S>>,
    /// Threads blocked (directly or transitively) behind the cycle, by tid.
    pub victims: Vec<BlockedThread<S>>,
    /// Since when the cycle has been unchanged.
    pub since: Timestamp,
}

impl<S> Deadlock<S> {
    /// Stable identity, so a caller polling [`WaitForGraph::deadlocks`] reports each
    /// deadlock once.
    pub fn key(&self) -> DeadlockKey {
        let mut locks: Vec<u64> = self.cycle.iter().map(|e| e.lock_id).collect();
        locks.sort_unstable();
        DeadlockKey(locks)
    }
}

/// Waiters stuck behind one lock that is held for long without a cycle (slow holder,
/// orphaned lock, or a wait on something we cannot see, such as I/O under a lock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LongWait<S = Vec<u64>> {
    /// The lock.
    pub lock_id: u64,
    /// The locked object's latest known address.
    pub lock_object: u64,
    /// Last known holder.
    pub owner_tid: Option<u64>,
    /// The threads waiting longer than the threshold, longest first.
    pub waiters: Vec<BlockedThread<S>>,
}

/// Pending waits and lock owners of one process, fed with its contention events.
#[derive(Clone, Debug)]
pub struct WaitForGraph<S = Vec<u64>> {
    config: WaitForConfig,
    waits: HashMap<u64, PendingWait<S>>,
    locks: HashMap<u64, LockState>,
    /// Logical clock for LRU: event arrival order, which unlike timestamps never repeats.
    tick: u64,
    stats: WaitForStats,
}

impl<S: Clone> Default for WaitForGraph<S> {
    fn default() -> Self {
        Self::new(WaitForConfig::default()).expect("default config is valid")
    }
}

impl<S: Clone> WaitForGraph<S> {
    /// An empty graph. Fails if a cap is zero or `max_locks <= max_waiters` (every waiter
    /// needs its lock tracked, and eviction needs at least one waiter-less lock).
    pub fn new(config: WaitForConfig) -> Result<Self> {
        if config.max_waiters == 0 {
            return Err(Error::InvalidConfig("max_waiters must be > 0"));
        }
        if config.max_locks <= config.max_waiters {
            return Err(Error::InvalidConfig("max_locks must be > max_waiters"));
        }
        Ok(WaitForGraph {
            config,
            waits: HashMap::new(),
            locks: HashMap::new(),
            tick: 0,
            stats: WaitForStats::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &WaitForConfig {
        &self.config
    }

    /// A thread blocked on a lock.
    pub fn on_start(&mut self, event: ContentionStart<S>) {
        self.tick += 1;
        let ContentionStart { waiter, lock_id, object, owner, stack, timestamp } = event;
        if let Some(previous) = self.waits.get(&waiter) {
            if previous.since > timestamp {
                // An older wait reported late: the thread has moved on since.
                self.stats.stale_events += 1;
                return;
            }
            // The thread is running again, so its previous wait ended even though we never
            // saw the Stop (lost event): treat it like one, at this event's time.
            self.stats.replaced_waits += 1;
            self.end_wait(waiter, timestamp);
        } else if self.waits.len() >= self.config.max_waiters && !self.make_room_for_waiter() {
            self.stats.dropped_starts += 1;
            return;
        }

        let tick = self.tick;
        let lock = self.locks.entry(lock_id).or_insert_with(|| LockState {
            object,
            owner: 0,
            owner_seen: timestamp,
            owner_changed: timestamp,
            waiters: 0,
            last_touch: tick,
        });
        lock.last_touch = tick;
        lock.waiters += 1;
        if object != 0 {
            lock.object = object;
        }
        if timestamp >= lock.owner_seen {
            // A waiter never holds the lock it waits on: an owner field naming the waiter
            // itself is garbage, and a belief that the waiter owns it is stale.
            let new_owner = if owner == waiter { 0 } else { owner };
            if new_owner != 0 {
                set_owner(lock, new_owner, timestamp);
            } else if lock.owner == waiter {
                set_owner(lock, 0, timestamp);
            }
        }
        self.waits.insert(waiter, PendingWait { lock_id, object, stack, since: timestamp });
        self.evict_locks_if_needed();
    }

    /// A thread's wait ended. Heuristic: it acquired the lock and now owns it.
    pub fn on_stop(&mut self, event: ContentionStop) {
        self.tick += 1;
        let Some(wait) = self.waits.get(&event.waiter) else {
            self.stats.unmatched_stops += 1;
            return;
        };
        if wait.since > event.timestamp {
            // Belongs to an earlier wait than the pending one (events reordered).
            self.stats.stale_events += 1;
            return;
        }
        self.end_wait(event.waiter, event.timestamp);
    }

    /// Removes `waiter`'s pending wait, which ended at `at`; it most likely acquired the lock.
    fn end_wait(&mut self, waiter: u64, at: Timestamp) {
        let Some(wait) = self.waits.get(&waiter) else {
            return;
        };
        let lock_id = wait.lock_id;
        self.remove_wait(waiter);
        let tick = self.tick;
        if let Some(lock) = self.locks.get_mut(&lock_id) {
            lock.last_touch = tick;
            if at >= lock.owner_seen {
                set_owner(lock, waiter, at);
            }
        }
    }

    /// The runtime announced a lock (first contention on it in this session).
    pub fn on_lock_created(&mut self, event: LockCreated) {
        self.tick += 1;
        let tick = self.tick;
        match self.locks.get_mut(&event.lock_id) {
            Some(lock) => {
                lock.object = event.object;
                lock.last_touch = tick;
                // The runtime announces each lock once, so a repeat is a new lock at a
                // reused address and the old owner is meaningless. With waiters pending
                // it cannot be a reuse; keep what we know.
                if lock.waiters == 0 {
                    lock.owner = 0;
                }
            }
            None => {
                self.locks.insert(
                    event.lock_id,
                    LockState {
                        object: event.object,
                        owner: 0,
                        owner_seen: Timestamp::default(),
                        owner_changed: Timestamp::default(),
                        waiters: 0,
                        last_touch: tick,
                    },
                );
                self.evict_locks_if_needed();
            }
        }
    }

    /// The pending wait of `tid`, if it is blocked.
    pub fn pending_wait(&self, tid: u64) -> Option<&PendingWait<S>> {
        self.waits.get(&tid)
    }

    /// The last known holder of `lock_id`, if known.
    pub fn lock_owner(&self, lock_id: u64) -> Option<u64> {
        self.locks.get(&lock_id).map(|l| l.owner).filter(|&o| o != 0)
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> WaitForStats {
        WaitForStats { pending_waits: self.waits.len(), tracked_locks: self.locks.len(), ..self.stats.clone() }
    }

    /// Cycles that have been unchanged for at least the confirm window at `now`, with their
    /// victims, ordered by key. Call it whenever convenient (e.g. once per second).
    pub fn deadlocks(&self, now: Timestamp) -> Vec<Deadlock<S>> {
        let analysis = cycles::find(self);
        let mut found: Vec<Deadlock<S>> = analysis
            .cycles
            .iter()
            .filter_map(|cycle| {
                let edges: Vec<WaitEdge<S>> = cycle.members.iter().map(|&tid| self.edge_of(tid)).collect();
                let since = cycle.members.iter().map(|&tid| self.edge_since(tid)).max().unwrap_or_default();
                if now.saturating_since(since) < self.config.confirm_window {
                    return None;
                }
                let mut edges = edges;
                let first = edges.iter().enumerate().min_by_key(|(_, e)| e.lock_id).map_or(0, |(i, _)| i);
                edges.rotate_left(first);
                let mut victims: Vec<BlockedThread<S>> =
                    cycle.victims.iter().map(|&tid| self.blocked_thread(tid)).collect();
                victims.sort_by_key(|v| v.tid);
                Some(Deadlock { cycle: edges, victims, since })
            })
            .collect();
        found.sort_by_key(|d| d.key());
        found
    }

    /// Locks not involved in any cycle whose waiters have waited at least `min_wait` at
    /// `now`, longest wait first. Threads on or behind a cycle are left to [`Self::deadlocks`].
    pub fn long_waits(&self, now: Timestamp, min_wait: Duration) -> Vec<LongWait<S>> {
        let analysis = cycles::find(self);
        let mut by_lock: HashMap<u64, Vec<BlockedThread<S>>> = HashMap::new();
        for (&tid, wait) in &self.waits {
            if analysis.involved.contains(&tid) || now.saturating_since(wait.since) < min_wait {
                continue;
            }
            by_lock.entry(wait.lock_id).or_default().push(self.blocked_thread(tid));
        }
        let mut out: Vec<LongWait<S>> = by_lock
            .into_iter()
            .map(|(lock_id, mut waiters)| {
                waiters.sort_by_key(|w| (w.waiting_since, w.tid));
                LongWait {
                    lock_id,
                    lock_object: self.locks.get(&lock_id).map_or(0, |l| l.object),
                    owner_tid: self.lock_owner(lock_id),
                    waiters,
                }
            })
            .collect();
        out.sort_by_key(|l| (l.waiters[0].waiting_since, l.lock_id));
        out
    }

    /// The successor of `tid` in the wait-for graph: the owner of the lock it waits on,
    /// when that owner is itself waiting (otherwise the chain ends there).
    fn successor(&self, tid: u64) -> Option<u64> {
        let wait = self.waits.get(&tid)?;
        let owner = self.lock_owner(wait.lock_id)?;
        (owner != tid && self.waits.contains_key(&owner)).then_some(owner)
    }

    fn edge_of(&self, tid: u64) -> WaitEdge<S> {
        let wait = &self.waits[&tid];
        WaitEdge {
            waiter_tid: tid,
            lock_id: wait.lock_id,
            lock_object: self.locks.get(&wait.lock_id).map_or(wait.object, |l| l.object),
            owner_tid: self.lock_owner(wait.lock_id).unwrap_or(0),
            waiter_stack: wait.stack.clone(),
            waiting_since: wait.since,
        }
    }

    /// Since when the edge out of `tid` has existed in its current form.
    fn edge_since(&self, tid: u64) -> Timestamp {
        let wait = &self.waits[&tid];
        let owner_changed = self.locks.get(&wait.lock_id).map_or(wait.since, |l| l.owner_changed);
        wait.since.max(owner_changed)
    }

    fn blocked_thread(&self, tid: u64) -> BlockedThread<S> {
        let wait = &self.waits[&tid];
        BlockedThread {
            tid,
            lock_id: wait.lock_id,
            blocked_on: self.lock_owner(wait.lock_id),
            stack: wait.stack.clone(),
            waiting_since: wait.since,
        }
    }

    fn remove_wait(&mut self, tid: u64) {
        if let Some(wait) = self.waits.remove(&tid)
            && let Some(lock) = self.locks.get_mut(&wait.lock_id)
        {
            lock.waiters = lock.waiters.saturating_sub(1);
        }
    }

    /// Evicts the oldest eighth of the waits that are not on a cycle. Returns false if
    /// nothing could be evicted.
    fn make_room_for_waiter(&mut self) -> bool {
        let on_cycle: HashSet<u64> = cycles::find(self).cycles.iter().flat_map(|c| c.members.iter().copied()).collect();
        let mut candidates: Vec<(Timestamp, u64)> =
            self.waits.iter().filter(|(tid, _)| !on_cycle.contains(tid)).map(|(&tid, w)| (w.since, tid)).collect();
        if candidates.is_empty() {
            return false;
        }
        let batch = (self.config.max_waiters / 8).clamp(1, candidates.len());
        if batch < candidates.len() {
            candidates.select_nth_unstable(batch - 1);
        }
        for &(_, tid) in &candidates[..batch] {
            self.remove_wait(tid);
        }
        self.stats.evicted_waits += batch as u64;
        true
    }

    /// Keeps the lock table under its cap by dropping the least recently touched eighth of
    /// the locks nobody waits on (they only remember an owner for future cycles).
    fn evict_locks_if_needed(&mut self) {
        if self.locks.len() <= self.config.max_locks {
            return;
        }
        let mut idle: Vec<(u64, u64)> =
            self.locks.iter().filter(|(_, l)| l.waiters == 0).map(|(&id, l)| (l.last_touch, id)).collect();
        let excess = self.locks.len() - self.config.max_locks;
        let batch = (self.config.max_locks / 8).max(excess).min(idle.len());
        if batch == 0 {
            return;
        }
        if batch < idle.len() {
            idle.select_nth_unstable(batch - 1);
        }
        for &(_, id) in &idle[..batch] {
            self.locks.remove(&id);
        }
        self.stats.evicted_locks += batch as u64;
    }
}

fn set_owner(lock: &mut LockState, owner: u64, at: Timestamp) {
    if lock.owner != owner {
        lock.owner = owner;
        lock.owner_changed = at;
    }
    lock.owner_seen = at;
}
