//! Cycle and victim search over the wait-for relation.
//!
//! Every blocked thread waits on exactly one lock and every lock has at most one owner, so
//! each thread has at most one successor: the graph is a functional graph. One walk per
//! thread with memoisation finds every cycle and, for every other thread, the cycle (if
//! any) it is stuck behind, in O(threads).

use std::collections::{HashMap, HashSet};

use super::WaitForGraph;

/// One cycle and the threads stuck behind it.
pub(super) struct Cycle {
    /// Members in wait order: each waits on a lock owned by the next, the last on one
    /// owned by the first.
    pub members: Vec<u64>,
    /// Threads that are not members but whose wait chain leads into the cycle.
    pub victims: Vec<u64>,
}

pub(super) struct Analysis {
    pub cycles: Vec<Cycle>,
    /// Members and victims of all cycles.
    pub involved: HashSet<u64>,
}

#[derive(Clone, Copy)]
enum Mark {
    /// On the walk in progress, at this position of the path.
    OnPath(usize),
    /// Resolved: leads into this cycle, or into none.
    Done(Option<usize>),
}

pub(super) fn find<S: Clone>(graph: &WaitForGraph<S>) -> Analysis {
    // Sorted start points make cycle numbering, and so report order, deterministic.
    let mut tids: Vec<u64> = graph.waits.keys().copied().collect();
    tids.sort_unstable();

    let mut marks: HashMap<u64, Mark> = HashMap::with_capacity(tids.len());
    let mut cycles: Vec<Cycle> = Vec::new();
    let mut path: Vec<u64> = Vec::new();

    for start in tids {
        if marks.contains_key(&start) {
            continue;
        }
        path.clear();
        let mut current = Some(start);
        // Follow successors until we reach something already resolved, close a cycle, or
        // reach a thread that is not blocked behind anyone we know.
        let outcome = loop {
            let Some(tid) = current else { break None };
            match marks.get(&tid).copied() {
                Some(Mark::Done(target)) => break target,
                Some(Mark::OnPath(pos)) => {
                    let members = path[pos..].to_vec();
                    let index = cycles.len();
                    for &m in &members {
                        marks.insert(m, Mark::Done(Some(index)));
                    }
                    path.truncate(pos);
                    cycles.push(Cycle { members, victims: Vec::new() });
                    break Some(index);
                }
                None => {
                    marks.insert(tid, Mark::OnPath(path.len()));
                    path.push(tid);
                    current = graph.successor(tid);
                }
            }
        };
        // Whatever is left on the path leads into `outcome` without being part of it.
        for &tid in &path {
            marks.insert(tid, Mark::Done(outcome));
            if let Some(index) = outcome {
                cycles[index].victims.push(tid);
            }
        }
    }

    let involved = cycles.iter().flat_map(|c| c.members.iter().chain(&c.victims).copied()).collect();
    Analysis { cycles, involved }
}
