//! Leak patterns, hangs and heap diffs on real .NET 3.1 and 8 processes, checked against what
//! the workloads report about themselves: how many observers an event holds, which threads
//! block where, how many orders were added between two snapshots.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use testbed::{Runtime, Value, Workload};

/// `analyze` trusts the DAC beside the dump: these dumps and their DACs were written here, by
/// `dumpwatch dump`, from this machine's runtimes (docs/security.md, "DAC provenance").
fn dumpwatch(args: &[&str]) -> (bool, String, String) {
    let mut args = args.to_vec();
    if args.first() == Some(&"analyze") {
        args.push("--trust-dac-beside-dump");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).output().expect("run dumpwatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = dumpwatch(args);
    assert!(ok, "dumpwatch {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

/// A heap dump of `w` at `path` (retried: createdump can lose a race with an exiting thread).
fn dump(w: &Workload, path: &Path) {
    for attempt in 0.. {
        let (ok, _, err) = dumpwatch(&["dump", &w.pid.to_string(), "-o", path.to_str().unwrap(), "--type", "heap"]);
        if ok {
            return;
        }
        assert!(attempt < 2 && err.contains("ptrace"), "dump failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn gcdump(w: &Workload, path: &Path) {
    json(&["gcdump", &w.pid.to_string(), "--json", "-o", path.to_str().unwrap()]);
}

fn tids(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn suspects_where<'a>(f: &'a Value, pattern: &str) -> Vec<&'a Value> {
    f["leak_suspects"].as_array().unwrap().iter().filter(|s| s["pattern"] == pattern).collect()
}

/// The sick and the healthy shapes of `LeakPatterns`, in an order that leaves no garbage of the
/// churn in the dump (the finalizer scenario collects last).
fn make_patterns(w: &Workload) -> Value {
    w.get("/churn?count=10000");
    w.get("/lru?ops=50000&keys=20000");
    w.get("/table?rows=20000");
    w.get("/events?count=30000");
    w.get("/timers?count=2000");
    w.get("/closures?count=3000");
    w.get("/orders?count=20000");
    w.get("/handles?count=2000&pinned=1500");
    w.get("/finalizers?count=5000");
    w.get("/truth")
}

fn check_patterns(runtime: Runtime, f: &Value, truth: &Value, from_dump: bool) {
    // A dump names a static field with its declaring type; a heap snapshot only knows the field.
    let declared = |class: &str, field: &str| if from_dump { format!("{class}.{field}") } else { field.to_string() };
    let all = f["leak_suspects"].as_array().unwrap();
    let brief: Vec<String> = all
        .iter()
        .map(|s| {
            format!("{} {} {} × {} | {}", s["confidence"], s["pattern"], s["instances"], s["type_name"], s["reason"])
        })
        .collect();
    let ctx = format!("{runtime:?} dump={from_dump}:\n{}", brief.join("\n"));

    let events = suspects_where(f, "event_handlers");
    assert_eq!(events.len(), 1, "{ctx}");
    let e = events[0];
    assert_eq!(e["type_name"], truth["subscriber_type"], "{ctx}");
    assert_eq!(e["instances"], truth["event_subscribers"], "{ctx}");
    assert_eq!(e["holder"], format!("static event {}", declared("LeakPatterns.Catalog", "Changed")), "{ctx}");
    assert_eq!(e["confidence"], "high");
    assert_eq!(
        e["reason"],
        format!(
            "30,000 `LeakPatterns.Observer` objects are reachable only through the invocation list of static event {} \
             (30,000 handlers of type `System.EventHandler`): handlers added and never removed",
            declared("LeakPatterns.Catalog", "Changed")
        ),
        "{ctx}"
    );

    let timers = suspects_where(f, "timers");
    assert_eq!(timers.len(), 1, "{ctx}");
    assert_eq!(timers[0]["type_name"], truth["timer_target_type"], "{ctx}");
    assert_eq!(timers[0]["instances"], truth["timers"], "{ctx}");
    let reason = timers[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2,000 `LeakPatterns.Session` objects are reachable only through the callbacks of 2,000"),
        "{ctx}"
    );
    // The workloads are compiled by mcs, whose closures are `<Method>c__AnonStoreyN` (Roslyn's
    // are `<>c__DisplayClassN_M`): both are closures.
    // (A heap snapshot names nested types without their enclosing type.)
    assert!(reason.contains("(callback `System.Threading.TimerCallback` → `"), "{ctx}");
    if from_dump {
        // A dump also names what the callback calls (the DAC names the delegate's method):
        // mcs compiles `_ => session.Touch()` in `Sessions.Start` to the closure's `<>m__0`.
        assert!(
            reason.contains(
                "<Start>c__AnonStorey0`, calling `LeakPatterns.Sessions+<Start>c__AnonStorey0.<>m__0(System.Object)`)"
            ),
            "{ctx}"
        );
    } else {
        assert!(reason.contains("<Start>c__AnonStorey0`)"), "{ctx}");
    }

    let closures = suspects_where(f, "closures");
    assert_eq!(closures.len(), 1, "{ctx}");
    assert_eq!(closures[0]["type_name"], truth["closure_capture_type"], "{ctx}");
    assert_eq!(closures[0]["instances"], truth["closures"], "{ctx}");
    let pending = format!("static {} → ", declared("LeakPatterns.RetryQueue", "Pending"));
    assert!(closures[0]["holder"].as_str().unwrap().starts_with(&pending), "{ctx}");
    assert!(closures[0]["reason"].as_str().unwrap().contains("<Handle>c__AnonStorey0`)"), "{ctx}");

    // The same type under its second holder is a suspect of its own, with its own count.
    let collections = suspects_where(f, "collection");
    assert_eq!(collections.len(), 1, "{ctx}");
    assert_eq!(collections[0]["type_name"], truth["order_type"], "{ctx}");
    assert_eq!(collections[0]["instances"], truth["open_orders"], "{ctx}");
    let open = format!("static {} → ", declared("LeakPatterns.OrderBook", "Open"));
    assert!(collections[0]["holder"].as_str().unwrap().starts_with(&open), "{ctx}");

    // GCHandle.Alloc never freed: named by the handle kind and what it holds (no owner: a
    // handle is not on the heap).
    let handles = suspects_where(f, "gc_handles");
    let rows: Vec<(&Value, &Value, &Value, &Value)> =
        handles.iter().map(|s| (&s["type_name"], &s["instances"], &s["root"], &s["holder"])).collect();
    let strong = format!("{} strong GC handles", thousands(truth["strong_handles"].as_u64().unwrap()));
    let pinned = format!("{} pinned GC handles", thousands(truth["pinned_handles"].as_u64().unwrap()));
    assert_eq!(
        rows,
        [
            (
                &Value::from("System.Byte[]"),
                &truth["pinned_handles"],
                &Value::from("[pinned handle]"),
                &Value::from(pinned)
            ),
            (
                &truth["strong_handle_type"],
                &truth["strong_handles"],
                &Value::from("[strong handle]"),
                &Value::from(strong)
            ),
        ],
        "{ctx}"
    );
    assert!(handles[1]["reason"].as_str().unwrap().contains("`GCHandle.Alloc` never freed"), "{ctx}");

    // Surest first.
    let order: Vec<&str> = all.iter().map(|s| s["confidence"].as_str().unwrap()).collect();
    assert_eq!(order, ["high", "high", "high", "high", "medium", "low"], "{ctx}");

    // The look-alikes stay silent: the bounded cache (5,000 entries, ~5.5 MB), the lookup table
    // (20,000 rows, ~3.5 MB), the churn (garbage). One snapshot cannot tell a cache or table
    // above the collection bar (8 MiB and 10 %) from a leak; the diff test below shows the
    // growth verdict ignoring a table four times that size.
    for silent in ["LeakPatterns.CacheEntry", "LeakPatterns.Country", "LeakPatterns.RequestBuffer"] {
        assert!(
            all.iter().all(|s| s["type_name"] != silent && !s["path"].to_string().contains(silent)),
            "{silent}: {ctx}"
        );
    }

    let b = &f["finalization_backlog"];
    let waiting = b["types"].as_array().unwrap().iter().find(|t| t["type_name"] == truth["finalizable_type"]);
    assert_eq!(waiting.map(|t| &t["count"]), Some(&truth["finalizable_waiting"]), "{runtime:?}: {b}");
    if from_dump {
        let stack = b["finalizer_stack"].to_string();
        assert!(stack.contains("LeakPatterns.Blocker.Finalize"), "{runtime:?}: {b}");
        assert!(
            b["reason"].as_str().unwrap().contains("the finalizer thread is in `LeakPatterns.Blocker.Finalize"),
            "{b}"
        );
    }
}

#[test]
fn every_leak_pattern_is_found_with_its_holder_and_the_look_alikes_stay_silent() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "LeakPatterns", &[]);
        let truth = make_patterns(&w);
        let dir = tempfile::tempdir().unwrap();
        let core = dir.path().join("core");
        dump(&w, &core);
        let f = json(&["analyze", core.to_str().unwrap(), "--json"]);
        check_patterns(runtime, &f, &truth, true);

        // The same from a heap snapshot (EventPipe: statics and the finalizer queue are roots too).
        let heap = dir.path().join("heap.nettrace");
        gcdump(&w, &heap);
        let g = json(&["analyze", heap.to_str().unwrap(), "--json"]);
        check_patterns(runtime, &g, &truth, false);

        // The report says it in words.
        let (ok, text, err) = dumpwatch(&["analyze", core.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(text.contains("[high] 30000 × LeakPatterns.Observer retain"), "{text}");
        assert!(text.contains("FINALIZATION BACKLOG: 5,"), "{text}");
    }
}

#[test]
fn hangs_name_the_threads_the_method_and_the_wait() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let starve = w.get("/taskwait?threads=8&queued=20");
        let blocks: Vec<Value> = ["semaphore", "mres", "task", "join"]
            .iter()
            .map(|k| w.get(&format!("/block?kind={k}&threads=6")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let core = dir.path().join("core");
        dump(&w, &core);
        let f = json(&["analyze", core.to_str().unwrap(), "--json"]);
        let hangs = f["hangs"].as_array().unwrap();
        let ctx = format!("{runtime:?}: {}", serde_json::to_string_pretty(hangs).unwrap());

        let s: Vec<&Value> = hangs.iter().filter(|h| h["kind"] == "thread_pool_starvation").collect();
        assert_eq!(s.len(), 1, "{ctx}");
        assert_eq!(tids(&s[0]["threads"]), tids(&starve["blocked"]), "{ctx}");
        assert_eq!(s[0]["wait"], starve["wait"], "{ctx}");
        assert!(s[0]["method"].as_str().unwrap().starts_with("DiagScenarios.OrderService.Get("), "{ctx}");
        // The blocked threads' own tasks and the extra items wait in the global queue.
        let queued = s[0]["queued_work_items"].as_u64().unwrap();
        assert!(queued >= starve["queued_work_items"].as_u64().unwrap(), "{ctx}");
        assert!(queued <= starve["pending_work_items"].as_u64().unwrap(), "{ctx}");
        assert!(
            s[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with("8 thread-pool threads wait in `OrderService.Get` → `Task.Result`"),
            "{ctx}"
        );

        for b in &blocks {
            let method = b["method"].as_str().unwrap();
            let found: Vec<&Value> = hangs
                .iter()
                .filter(|h| {
                    h["kind"] == "blocked_threads" && h["method"].as_str().unwrap().starts_with(&format!("{method}("))
                })
                .collect();
            assert_eq!(found.len(), 1, "{method}: {ctx}");
            assert_eq!(found[0]["wait"], b["wait"], "{method}: {ctx}");
            assert_eq!(tids(&found[0]["threads"]), tids(&b["threads"]), "{method}: {ctx}");
        }
        assert_eq!(f["summary"]["hangs"], hangs.len());
        assert_eq!(hangs.len(), 5, "{ctx}");
    }
}

#[test]
fn live_hangs_match_the_dump_analysis_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let starve = w.get("/taskwait?threads=8&queued=20");
        let semaphore = w.get("/block?kind=semaphore&threads=6");
        let live = json(&["hangs", &w.pid.to_string(), "--json"]);
        let hangs = live["hangs"].as_array().unwrap();
        let ctx = format!("{runtime:?}: {}", serde_json::to_string_pretty(&live).unwrap());
        assert_eq!(hangs.len(), 2, "{ctx}");
        assert_eq!(hangs[0]["kind"], "thread_pool_starvation", "{ctx}");
        assert_eq!(tids(&hangs[0]["threads"]), tids(&starve["blocked"]), "{ctx}");
        assert_eq!(hangs[0]["wait"], "Task.Result", "{ctx}");
        // The runtime's own queue length counter, which the workload read as PendingWorkItemCount.
        assert_eq!(live["queued_work_items"], starve["pending_work_items"], "{ctx}");
        assert_eq!(hangs[1]["kind"], "blocked_threads", "{ctx}");
        assert_eq!(tids(&hangs[1]["threads"]), tids(&semaphore["threads"]), "{ctx}");
        assert_eq!(hangs[1]["wait"], "SemaphoreSlim.Wait", "{ctx}");
        assert!(hangs[1]["method"].as_str().unwrap().starts_with("DiagScenarios.InventoryService.Reserve("), "{ctx}");
        let (ok, text, err) = dumpwatch(&["hangs", &w.pid.to_string()]);
        assert!(ok, "{err}");
        assert!(
            text.contains("THREAD-POOL STARVATION: 8 thread-pool threads wait in `OrderService.Get` → `Task.Result`"),
            "{text}"
        );
    }
}

fn type_row<'a>(d: &'a Value, name: &str) -> Option<&'a Value> {
    d["types"].as_array().unwrap().iter().find(|t| t["type_name"] == name)
}

#[test]
fn diff_shows_the_leak_growing_with_its_holder_and_the_steady_types_steady() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "LeakPatterns", &[]);
        w.get("/table?rows=100000");
        w.get("/lru?ops=20000&keys=20000");
        w.get("/orders?count=5000");
        let dir = tempfile::tempdir().unwrap();
        let snaps: Vec<std::path::PathBuf> = (0..4).map(|i| dir.path().join(format!("h{i}.nettrace"))).collect();
        gcdump(&w, &snaps[0]);
        let core = dir.path().join("core");
        let mut totals = vec![w.get("/truth")["open_orders"].as_u64().unwrap()];
        for (i, snap) in snaps.iter().enumerate().skip(1) {
            // Between snapshots: the leak grows, the cache churns at its capacity, requests come and go.
            w.get("/orders?count=7000");
            w.get("/lru?ops=20000&keys=20000");
            w.get("/churn?count=2000");
            totals.push(w.get("/truth")["open_orders"].as_u64().unwrap());
            if i == 1 {
                dump(&w, &core);
            }
            gcdump(&w, snap);
        }
        assert_eq!(totals, [5000, 12000, 19000, 26000]);

        // A gcdump and a core dump compare.
        let d = json(&["diff", snaps[0].to_str().unwrap(), core.to_str().unwrap(), "--json"]);
        let ctx = format!("{runtime:?}: {}", serde_json::to_string_pretty(&d["types"]).unwrap());
        let orders = type_row(&d, "LeakPatterns.Order").expect("Order grew");
        assert_eq!(orders["count_delta"], 7000, "{ctx}");
        assert_eq!(orders["new_count"], 12000, "{ctx}");
        let held = &orders["held_by"];
        // The new snapshot is a dump: the path names the declaring type.
        assert!(held["path"].as_str().unwrap().starts_with("static LeakPatterns.OrderBook.Open → "), "{ctx}");
        assert_eq!(held["new_instances"].as_u64().unwrap() - held["old_instances"].as_u64().unwrap(), 7000, "{ctx}");
        // (A dump also counts garbage, such as the cache's evicted entries: only the table is
        // steady in both kinds.)
        assert!(type_row(&d, "LeakPatterns.Country").is_none_or(|t| t["count_delta"] == 0), "{ctx}");
        assert!(d["growth_verdicts"].is_null(), "two snapshots are one interval");

        // Four gcdumps: three intervals of growth make a verdict, for the leak alone.
        let args: Vec<&str> =
            std::iter::once("diff").chain(snaps.iter().map(|p| p.to_str().unwrap())).chain(["--json"]).collect();
        let d = json(&args);
        let unnamed: Vec<&Value> =
            d["types"].as_array().unwrap().iter().filter(|t| t["type_name"].to_string().contains("Type(")).collect();
        assert_eq!(
            type_row(&d, "LeakPatterns.Order").unwrap()["count_delta"],
            21000,
            "{runtime:?} {:?} {unnamed:?}",
            d["snapshots"]
        );
        for steady in ["LeakPatterns.Country", "LeakPatterns.CacheEntry"] {
            assert!(type_row(&d, steady).is_none_or(|t| t["count_delta"] == 0), "{runtime:?} {steady}: {}", d["types"]);
        }
        let verdicts = d["growth_verdicts"].as_array().unwrap();
        let names: Vec<&str> = verdicts.iter().map(|v| v["type_name"].as_str().unwrap()).collect();
        assert!(names.contains(&"LeakPatterns.Order"), "{runtime:?}: {verdicts:?}");
        for v in verdicts {
            // The orders' line arrays grow with them and are held by them; nothing else grows.
            assert!(["LeakPatterns.Order", "System.Byte[]"].contains(&v["type_name"].as_str().unwrap()), "{v}");
        }
        let order = verdicts.iter().find(|v| v["type_name"] == "LeakPatterns.Order").unwrap();
        assert_eq!((order["first_count"].as_u64(), order["last_count"].as_u64()), (Some(5000), Some(26000)));
        assert!(order["holder"].as_str().unwrap().starts_with("static Open → "), "{order}");

        let (ok, text, err) = dumpwatch(&["diff", snaps[0].to_str().unwrap(), snaps[3].to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(text.contains("+21000") && text.contains("LeakPatterns.Order"), "{text}");
        assert!(text.contains("held by static Open → System.Collections.Generic.Dictionary"), "{text}");
    }
}
