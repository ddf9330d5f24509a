//! `dumpwatch analyze <core> <view>`: the drill-down after the verdict, as in the seed article's
//! `dotnet-dump analyze` session (`clrstack -all`, `syncblk`, `dumpheap -stat`, `dumpheap -type`,
//! `dumpobj`, `gcroot`, `finalizequeue`, `threadpool`), each as text or `--json`.
//!
//! Pure renderings of what the dump reading produced (threads, sync blocks, the object graph).

use std::collections::BTreeMap;
use std::fmt::Write;

use analysis::heap::{NodeIndex, ObjectGraph, RootKind, chains_from_roots, referrers};
use clrdump::model::Snapshot;
use clrdump::names::simplify_type_name;
use serde_json::{Value, json};

/// What to show instead of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Every thread's managed stack, threads with identical stacks grouped (`clrstack -all`).
    Threads,
    /// Monitors held or waited for: owner, waiters, the locked object (`syncblk`).
    Syncblk,
    /// Objects and bytes per type, biggest first (`dumpheap -stat`); ARG: how many (default all).
    HeapStat,
    /// Objects of one type with their addresses and sizes (`dumpheap -type`); ARG: the type's
    /// full name, then optionally how many (default 20).
    HeapType,
    /// One object: its type, size, what it references and what references it (`dumpobj`); ARG: address.
    Obj,
    /// Every root that keeps an object alive, with its chain of references (`gcroot`); ARG: address.
    Roots,
    /// Objects waiting for their finalizer, by type (`finalizequeue`).
    FinalizerQueue,
    /// The thread pool: its threads grouped by stack and the work items waiting (`threadpool`).
    Threadpool,
}

impl View {
    /// Whether the view needs the object graph (slower: the whole heap is walked).
    pub fn needs_graph(self) -> bool {
        matches!(self, View::HeapType | View::Obj | View::Roots | View::FinalizerQueue | View::Threadpool)
    }
}

/// A view's output: the text and the same as JSON.
pub struct Rendered {
    pub text: String,
    pub json: Value,
}

/// Renders `view` with its arguments, or says what is wrong with them.
pub fn render(view: View, args: &[String], s: &Snapshot, graph: Option<&ObjectGraph>) -> Result<Rendered, String> {
    let graph =
        || graph.ok_or_else(|| "this view needs the object graph, which the dump reading did not build".to_string());
    match view {
        View::Threads => Ok(threads(s, |_| true)),
        View::Syncblk => Ok(syncblk(s)),
        View::HeapStat => Ok(heap_stat(s, arg_number(args.first(), usize::MAX)?)),
        View::HeapType => {
            let name = args.first().ok_or("heap-type needs a type name, e.g. `heap-type System.Byte[]`")?;
            Ok(heap_type(graph()?, name, arg_number(args.get(1), 20)?))
        }
        View::Obj => Ok(obj(graph()?, address(args)?)?),
        View::Roots => Ok(roots(graph()?, address(args)?)?),
        View::FinalizerQueue => Ok(finalizer_queue(graph()?)),
        View::Threadpool => Ok(threadpool(s, graph()?)),
    }
}

fn arg_number(arg: Option<&String>, default: usize) -> Result<usize, String> {
    arg.map_or(Ok(default), |a| a.parse().map_err(|_| format!("{a:?} is not a count")))
}

fn address(args: &[String]) -> Result<u64, String> {
    let a = args.first().ok_or("this view needs an object address, e.g. 0x7f3a1c0a2b40")?;
    let hex = a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")).unwrap_or(a);
    u64::from_str_radix(hex, 16).map_err(|_| format!("{a:?} is not an address (hex, e.g. 0x7f3a1c0a2b40)"))
}

fn managed_frames(frames: &[clrdump::model::Frame]) -> Vec<String> {
    frames.iter().map(|f| f.name.clone()).filter(|n| !(n.starts_with('[') && n.ends_with(']'))).collect()
}

/// Alive threads whose stack `keep` accepts, grouped by identical stack, biggest group first.
fn threads(s: &Snapshot, keep: impl Fn(&[String]) -> bool) -> Rendered {
    let mut groups: BTreeMap<Vec<String>, Vec<&clrdump::model::Thread>> = BTreeMap::new();
    for t in s.threads.iter().filter(|t| t.alive) {
        let stack = managed_frames(&t.frames);
        if keep(&stack) {
            groups.entry(stack).or_default().push(t);
        }
    }
    let mut groups: Vec<(Vec<String>, Vec<&clrdump::model::Thread>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.1[0].managed_id.cmp(&b.1[0].managed_id)));
    let mut text = String::new();
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let _ = writeln!(text, "{total} threads, {} distinct stacks", groups.len());
    for (stack, ts) in &groups {
        let ids: Vec<String> = ts.iter().map(|t| format!("{} (os {})", t.managed_id, t.os_id)).collect();
        let _ = writeln!(text, "\n{} × thread {}", ts.len(), ids.join(", "));
        if let Some(e) = ts.iter().find_map(|t| t.last_exception.as_deref()) {
            let _ = writeln!(text, "    last thrown: {}", simplify_type_name(e));
        }
        if stack.is_empty() {
            let _ = writeln!(text, "    (no managed frames)");
        }
        for f in stack {
            let _ = writeln!(text, "    {f}");
        }
    }
    let json = Value::Array(
        groups
            .iter()
            .map(|(stack, ts)| {
                json!({
                    "count": ts.len(),
                    "threads": ts.iter().map(|t| json!({"os_tid": t.os_id, "managed_id": t.managed_id,
                        "last_exception": t.last_exception.as_deref().map(simplify_type_name)})).collect::<Vec<_>>(),
                    "stack": stack,
                })
            })
            .collect(),
    );
    Rendered { text, json }
}

fn syncblk(s: &Snapshot) -> Rendered {
    let mut text = format!("{} monitors held or waited for\n", s.sync_blocks.len());
    if !s.sync_blocks.is_empty() {
        let _ =
            writeln!(text, "  {:>5}  {:>18}  {:>6}  {:>7}  {:>7}  type", "index", "object", "held", "owner", "waiters");
    }
    for b in &s.sync_blocks {
        let owner = match (b.owner_managed_id, b.owner_os_id) {
            (Some(m), _) => m.to_string(),
            (None, Some(os)) => format!("os {os}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            text,
            "  {:>5}  {:>#18x}  {:>6}  {:>7}  {:>7}  {}",
            b.index,
            b.object,
            if b.held { format!("×{}", b.recursion.max(1)) } else { "no".into() },
            owner,
            b.waiters,
            simplify_type_name(&b.object_type)
        );
    }
    let json = Value::Array(
        s.sync_blocks
            .iter()
            .map(|b| {
                json!({"index": b.index, "lock_id": b.address, "object": b.object,
                       "object_type": simplify_type_name(&b.object_type), "held": b.held, "recursion": b.recursion,
                       "owner_os_tid": b.owner_os_id, "owner_managed_id": b.owner_managed_id, "waiters": b.waiters})
            })
            .collect(),
    );
    Rendered { text, json }
}

fn heap_stat(s: &Snapshot, limit: usize) -> Rendered {
    let h = crate::analyze::histogram(s);
    let rows = h.types();
    let mut text = format!("{} objects, {} bytes, {} types\n", h.total_objects(), h.total_bytes(), rows.len());
    let _ = writeln!(text, "  {:>10}  {:>14}  type", "objects", "bytes");
    for t in rows.iter().take(limit) {
        let _ = writeln!(text, "  {:>10}  {:>14}  {}", t.count, t.bytes, t.type_name);
    }
    let json = Value::Array(
        rows.iter()
            .take(limit)
            .map(|t| json!({"type_name": t.type_name, "count": t.count, "bytes": t.bytes}))
            .collect(),
    );
    Rendered { text, json }
}

fn heap_type(g: &ObjectGraph, name: &str, limit: usize) -> Rendered {
    let nodes = g.nodes_of_type(name);
    let bytes: u64 = nodes.iter().map(|&n| g.size(n)).sum();
    let mut text = format!("{} objects of {name}, {bytes} bytes", nodes.len());
    if nodes.is_empty() {
        text.push_str(" (the full type name, as `heap-stat` prints it)");
    }
    text.push('\n');
    for &n in nodes.iter().take(limit) {
        let _ = writeln!(text, "  {:#x}  {:>10}", g.address(n), g.size(n));
    }
    if nodes.len() > limit {
        let _ = writeln!(text, "  … {} more (give a count after the type name)", nodes.len() - limit);
    }
    let json = json!({
        "type_name": name, "count": nodes.len(), "bytes": bytes,
        "objects": nodes.iter().take(limit).map(|&n| json!({"address": g.address(n), "size": g.size(n)})).collect::<Vec<_>>(),
    });
    Rendered { text, json }
}

fn node(g: &ObjectGraph, addr: u64) -> Result<NodeIndex, String> {
    g.find(addr).ok_or_else(|| {
        format!("{addr:#x} is not the start of an object of the heap (`heap-type <type>` lists addresses)")
    })
}

fn described(g: &ObjectGraph, n: NodeIndex) -> Value {
    json!({"address": g.address(n), "type_name": g.type_name(n), "size": g.size(n)})
}

fn obj(g: &ObjectGraph, addr: u64) -> Result<Rendered, String> {
    let n = node(g, addr)?;
    let refs: Vec<NodeIndex> = g.children(n).collect();
    let by: Vec<NodeIndex> = referrers(g, n);
    let rooted: Vec<String> = g.roots().iter().filter(|r| r.node == n).map(|r| r.kind.to_string()).collect();
    let mut text = format!("{:#x}  {}  {} bytes\n", addr, g.type_name(n), g.size(n));
    if !rooted.is_empty() {
        let _ = writeln!(text, "rooted as: {}", rooted.join(", "));
    }
    for (title, list) in [("references", &refs), ("referenced by", &by)] {
        let _ = writeln!(text, "{title} ({}):", list.len());
        for &r in list.iter().take(50) {
            let _ = writeln!(text, "  {:#x}  {}", g.address(r), g.type_name(r));
        }
        if list.len() > 50 {
            let _ = writeln!(text, "  … {} more", list.len() - 50);
        }
    }
    let json = json!({
        "object": described(g, n), "rooted_as": rooted,
        "references": refs.iter().map(|&r| described(g, r)).collect::<Vec<_>>(),
        "referenced_by": by.iter().map(|&r| described(g, r)).collect::<Vec<_>>(),
    });
    Ok(Rendered { text, json })
}

/// At most this many roots are listed (a popular object can have thousands of stack roots).
const MAX_ROOTS: usize = 50;

fn roots(g: &ObjectGraph, addr: u64) -> Result<Rendered, String> {
    let n = node(g, addr)?;
    let chains = chains_from_roots(g, n, MAX_ROOTS);
    let mut text = format!("{:#x}  {}: {} roots\n", addr, g.type_name(n), chains.len());
    if chains.is_empty() {
        text.push_str("  none: nothing keeps it alive (garbage the next GC collects)\n");
    }
    for c in &chains {
        let _ = writeln!(text, "\n  {}", c.root);
        for &step in &c.path {
            let _ = writeln!(text, "    → {:#x}  {}", g.address(step), g.type_name(step));
        }
    }
    let json = Value::Array(
        chains
            .iter()
            .map(|c| {
                json!({"root": c.root.to_string(), "root_kind": c.root,
                            "path": c.path.iter().map(|&s| described(g, s)).collect::<Vec<_>>()})
            })
            .collect(),
    );
    Ok(Rendered { text, json })
}

fn finalizer_queue(g: &ObjectGraph) -> Rendered {
    let waiting: Vec<NodeIndex> = g.roots().iter().filter(|r| r.kind == RootKind::Finalizer).map(|r| r.node).collect();
    let mut by_type: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for &n in &waiting {
        let e = by_type.entry(g.type_name(n)).or_default();
        e.0 += 1;
        e.1 += g.size(n);
    }
    let mut rows: Vec<(&str, (u64, u64))> = by_type.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    let mut text = format!("{} objects wait for their finalizer\n", waiting.len());
    for (name, (count, bytes)) in &rows {
        let _ = writeln!(text, "  {count:>10}  {bytes:>12}  {name}");
    }
    let json = json!({
        "objects": waiting.len(),
        "types": rows.iter().map(|(name, (count, bytes))| json!({"type_name": name, "count": count, "bytes": bytes})).collect::<Vec<_>>(),
    });
    Rendered { text, json }
}

fn threadpool(s: &Snapshot, g: &ObjectGraph) -> Rendered {
    let queued = analysis::hangs::queued_work_items(g);
    let pool = threads(s, analysis::hangs::is_pool_thread);
    let queue = queued.map_or_else(|| "unknown (no ThreadPoolWorkQueue in the heap)".to_string(), |q| q.to_string());
    let text = format!("work items waiting in the global queue: {queue}\npool threads: {}", pool.text);
    Rendered { text, json: json!({"queued_work_items": queued, "threads": pool.json}) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_counts_are_checked_with_a_hint() {
        assert_eq!(address(&["0x10".into()]), Ok(16));
        assert_eq!(address(&["ff".into()]), Ok(255));
        assert!(address(&[]).unwrap_err().contains("address"));
        assert!(address(&["zz".into()]).unwrap_err().contains("not an address"));
        assert_eq!(arg_number(None, 20), Ok(20));
        assert!(arg_number(Some(&"x".to_string()), 20).is_err());
    }
}
