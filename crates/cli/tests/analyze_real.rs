//! `dumpwatch dump` then `dumpwatch analyze` on real .NET 3.1 and 8 workloads, checked against
//! the ground truth the workload reports: which OS threads deadlock, how many queue behind
//! them, how many customers leaked and through which objects.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use testbed::{Runtime, Value, Workload};

fn dumpwatch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).output().expect("run dumpwatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dump_and_analyze(w: &Workload, dir: &Path, extra: &[&str]) -> Value {
    let core = dir.join("core");
    let core = core.to_str().unwrap();
    // createdump can lose a race with a thread that is exiting (the workload's HTTP request
    // threads end right after answering): "ptrace(ATTACH, tid) FAILED No such process".
    // That is the dump writer's transient failure, not the analysis under test: retry.
    let mut attempt = 0;
    loop {
        let (ok, _, err) = dumpwatch(&["dump", &w.pid.to_string(), "-o", core, "--type", "heap"]);
        if ok {
            break;
        }
        attempt += 1;
        assert!(attempt < 3 && err.contains("ptrace"), "dump failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The DAC `dump` wrote beside the core, from this machine's runtime: trusted on purpose.
    let mut args = vec!["analyze", core, "--json", "--top", "40", "--trust-dac-beside-dump"];
    args.extend_from_slice(extra);
    let (ok, out, err) = dumpwatch(&args);
    assert!(ok, "analyze failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn tids(list: &Value, key: &str) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t[key]["os_tid"].as_u64().unwrap()).collect()
}

fn truth_tids(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

#[test]
fn finds_the_deadlock_and_the_leak_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let total = w.get("/leak?count=150000")["total_customers"].as_u64().unwrap();
        let dl = w.get("/deadlock?waiters=3");
        let dir = tempfile::tempdir().unwrap();
        let f = dump_and_analyze(&w, dir.path(), &[]);

        assert_eq!(f["schema"], "dumpwatch.findings");
        assert_eq!(f["version"], 1);
        assert_eq!(f["warnings"].as_array().unwrap().len(), 0, "{runtime:?}: {}", f["warnings"]);

        // The histogram counts exactly the leaked customers.
        let types = f["heap"]["top_types"].as_array().unwrap();
        let customer = types.iter().find(|t| t["type_name"] == "DiagScenarios.Customer").expect("Customer listed");
        assert_eq!(customer["count"].as_u64().unwrap(), total, "{runtime:?}");

        // One deadlock: the two owners on the cycle, the three waiters as victims.
        assert_eq!(f["summary"]["deadlocks"], 1, "{runtime:?}: {}", f["deadlocks"]);
        let d = &f["deadlocks"][0];
        assert_eq!(tids(&d["cycle"], "thread"), truth_tids(&dl["owners"]), "{runtime:?}");
        assert_eq!(tids(&d["cycle"], "held_by"), truth_tids(&dl["owners"]), "{runtime:?}");
        assert_eq!(tids(&d["victims"], "thread"), truth_tids(&dl["waiters"]), "{runtime:?}");
        assert_eq!(f["summary"]["victims"], 3);
        for e in d["cycle"].as_array().unwrap() {
            assert_eq!(e["waits_for"]["object_type"], "System.Object");
            let stack = e["stack"].as_array().unwrap();
            assert!(
                stack.iter().any(|s| s.as_str().unwrap().starts_with("DiagScenarios.Deadlocks.DeadlockFunc")),
                "{stack:?}"
            );
        }
        assert_eq!(f["long_waits"].as_array().unwrap().len(), 0, "victims are not long waits");

        // The top leak suspect is Customer, held through the cache.
        let top = &f["leak_suspects"][0];
        assert_eq!(top["type_name"], "DiagScenarios.Customer", "{runtime:?}: {}", f["leak_suspects"]);
        assert_eq!(top["instances"].as_u64().unwrap(), total);
        let path: Vec<&str> = top["path"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(path.contains(&"DiagScenarios.CustomerCache"), "{path:?}");
        assert!(path.contains(&"System.Collections.Generic.List<DiagScenarios.Customer>"), "{path:?}");
        assert_eq!(top["path_instances"].as_u64().unwrap(), total);
        assert_eq!(top["root"], "static DiagScenarios.Processor.Current", "{runtime:?}: the holder is named");

        // The text report says it in a few lines.
        let (ok, text, err) =
            dumpwatch(&["analyze", dir.path().join("core").to_str().unwrap(), "--trust-dac-beside-dump"]);
        assert!(ok, "{err}");
        assert!(text.contains("DEADLOCK 1: 2 threads wait for each other; 3 more threads"), "{text}");
        assert!(text.contains("× DiagScenarios.Customer retain"), "{text}");
        assert!(text.contains("DiagScenarios.CustomerCache →"), "{text}");
    }
}

#[test]
fn a_healthy_process_has_no_deadlock_and_no_leak_suspect() {
    for runtime in Runtime::ALL {
        for name in ["Idle", "DiagScenarios"] {
            let w = Workload::start(runtime, name, &[]);
            let dir = tempfile::tempdir().unwrap();
            let f = dump_and_analyze(&w, dir.path(), &[]);
            assert_eq!(f["summary"]["deadlocks"], 0, "{runtime:?} {name}: {}", f["deadlocks"]);
            assert_eq!(f["long_waits"].as_array().unwrap().len(), 0, "{runtime:?} {name}: {}", f["long_waits"]);
            assert_eq!(f["leak_suspects"].as_array().unwrap().len(), 0, "{runtime:?} {name}: {}", f["leak_suspects"]);
            assert!(f["heap"]["objects"].as_u64().unwrap() > 100);
        }
    }
}

#[test]
fn histogram_only_skips_retention_and_a_wrong_dac_is_refused() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let total = w.get("/leak?count=2000")["total_customers"].as_u64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dump_and_analyze(&w, dir.path(), &["--histogram-only"]);
    assert!(f["leak_suspects"].is_null());
    let types = f["heap"]["top_types"].as_array().unwrap();
    let customer = types.iter().find(|t| t["type_name"] == "DiagScenarios.Customer").expect("Customer listed");
    assert_eq!(customer["count"].as_u64().unwrap(), total);

    let wrong = Runtime::Net31.shared_dir().join("libmscordaccore.so");
    let core = dir.path().join("core");
    let (ok, _, err) = dumpwatch(&["analyze", core.to_str().unwrap(), "--dac", wrong.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("is version 4.700.") && err.contains("dump's runtime is 8.0."), "{err}");

    let (ok, _, err) = dumpwatch(&["analyze", "/etc/hostname"]);
    assert!(!ok);
    assert!(err.contains("not an x86-64 ELF core dump"), "{err}");
}

/// The workload dies of an unhandled exception with the crash-dump environment the webhook
/// injects; the analysis of the runtime's own dump names the exception and the thread.
#[test]
fn a_crash_dump_names_the_unhandled_exception_and_its_thread_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(api::crash_dumps::CRASH_DIR)).unwrap();
        let iso = testbed::Isolation { env: api::crash_dumps::app_environment(dir.path()), ..Default::default() };
        let mut w = Workload::start_with(runtime, "DiagScenarios", &[], &iso);
        let truth = w.get("/crash?delay_ms=100");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while w.is_running() {
            assert!(std::time::Instant::now() < deadline, "{runtime:?}: the workload did not crash");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // The runtime finished writing before it died; .NET Core 3.1 names it in hex.
        let core = std::fs::read_dir(dir.path().join(api::crash_dumps::CRASH_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| api::crash_dumps::pid_of_dump_name(&p.file_name().unwrap().to_string_lossy()) == Some(w.pid))
            .unwrap_or_else(|| panic!("{runtime:?}: no crash dump of pid {}", w.pid));
        let report_beside =
            core.with_file_name(format!("{}.crashreport.json", core.file_name().unwrap().to_string_lossy()));
        assert_eq!(report_beside.exists(), runtime == Runtime::Net8, "{runtime:?}: crash reports exist from .NET 6");

        let (ok, out, err) = dumpwatch(&["analyze", core.to_str().unwrap(), "--json", "--histogram-only", "--crashed"]);
        assert!(ok, "{runtime:?}: {err}");
        let f: Value = serde_json::from_str(&out).unwrap();
        let crash = &f["crash"];
        assert_eq!(crash["exception_type"], truth["exception_type"], "{runtime:?}: {f}");
        assert_eq!(crash["thread"]["managed_id"], truth["thread"], "{runtime:?}: {crash}");
        let expected_source = if runtime == Runtime::Net8 { "crash_report" } else { "dump" };
        assert_eq!(crash["source"], expected_source, "{runtime:?}");
        if runtime == Runtime::Net8 {
            // The report's thread is the dump's; the stack is where it was thrown.
            let stack: Vec<&str> = crash["stack"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            assert!(stack.iter().any(|s| s.starts_with("DiagScenarios.CrashScenario.ThrowUnhandled")), "{stack:?}");
        }

        // Without --crashed the report beside the dump still makes it a crash (.NET 8); the text says it first.
        let (ok, text, err) = dumpwatch(&["analyze", core.to_str().unwrap(), "--histogram-only", "--crashed"]);
        assert!(ok, "{err}");
        assert!(
            text.contains("CRASH: the process crashed: unhandled DiagScenarios.WorkloadCrashException"),
            "{runtime:?}: {text}"
        );
        if runtime == Runtime::Net8 {
            let (ok, out, _) = dumpwatch(&["analyze", core.to_str().unwrap(), "--json", "--histogram-only"]);
            assert!(ok);
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["crash"]["source"], "crash_report");
        }
    }
}

/// The drill-down views after the verdict (`analyze <dump> <view>`), on a dump whose truth the
/// workload knows: a deadlock (two owners, waiters) and N leaked customers under a static.
#[test]
fn drill_down_views_show_the_workloads_threads_locks_objects_and_roots_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let total = w.get("/leak?count=2000")["total_customers"].as_u64().unwrap();
        let dl = w.get("/deadlock?waiters=2");
        let dir = tempfile::tempdir().unwrap();
        // Without the object graph the stacks' references are read only because monitors are
        // held: the deadlock is found from them.
        let f = dump_and_analyze(&w, dir.path(), &["--histogram-only"]);
        assert_eq!(f["summary"]["deadlocks"], 1, "{runtime:?}: {}", f["deadlocks"]);
        let core = dir.path().join("core");
        let view = |args: &[&str]| -> Value {
            let mut all = vec!["analyze", core.to_str().unwrap()];
            all.extend_from_slice(args);
            all.push("--json");
            let (ok, out, err) = dumpwatch(&all);
            assert!(ok, "{runtime:?} {args:?}: {err}");
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
        };

        // threads: the owners and waiters all stand in DeadlockFunc or wait for its locks.
        let groups = view(&["threads"]);
        let in_deadlock: BTreeSet<u64> = groups
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["stack"].to_string().contains("DiagScenarios.Deadlocks."))
            .flat_map(|g| g["threads"].as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()))
            .collect();
        let expected: BTreeSet<u64> = truth_tids(&dl["owners"]).union(&truth_tids(&dl["waiters"])).copied().collect();
        assert_eq!(in_deadlock, expected, "{runtime:?}: {groups:#}");

        // syncblk: the two held monitors, owned by the two owners.
        let locks = view(&["syncblk"]);
        let owners: BTreeSet<u64> = locks
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["held"] == true)
            .map(|l| l["owner_os_tid"].as_u64().unwrap())
            .collect();
        assert_eq!(owners, truth_tids(&dl["owners"]), "{runtime:?}: {locks:#}");

        // heap-stat and heap-type count exactly the leaked customers.
        let stat = view(&["heap-stat"]);
        let row = stat.as_array().unwrap().iter().find(|t| t["type_name"] == "DiagScenarios.Customer").unwrap();
        assert_eq!(row["count"].as_u64(), Some(total), "{runtime:?}");
        let customers = view(&["heap-type", "DiagScenarios.Customer", "3"]);
        assert_eq!(customers["count"].as_u64(), Some(total), "{runtime:?}");
        assert_eq!(customers["objects"].as_array().unwrap().len(), 3);
        let addr = format!("{:#x}", customers["objects"][0]["address"].as_u64().unwrap());

        // obj: a customer, referenced by the cache's array.
        let o = view(&["obj", &addr]);
        assert_eq!(o["object"]["type_name"], "DiagScenarios.Customer", "{runtime:?}: {o:#}");
        assert!(o["referenced_by"].to_string().contains("DiagScenarios.Customer[]"), "{runtime:?}: {o:#}");

        // roots: the static that holds the cache, through the cache and its list.
        let roots = view(&["roots", &addr]);
        let by_static = roots
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["root"] == "static DiagScenarios.Processor.Current")
            .unwrap_or_else(|| panic!("{runtime:?}: no static root: {roots:#}"));
        let path: Vec<&str> =
            by_static["path"].as_array().unwrap().iter().map(|s| s["type_name"].as_str().unwrap()).collect();
        assert!(path.contains(&"DiagScenarios.CustomerCache"), "{path:?}");
        assert_eq!(path.last(), Some(&"DiagScenarios.Customer"));

        // The rest answer, and a bad address is a clear error.
        assert!(view(&["finalizer-queue"])["objects"].is_u64());
        assert!(view(&["threadpool"])["threads"].is_array());
        let (ok, _, err) = dumpwatch(&["analyze", core.to_str().unwrap(), "obj", "0x8"]);
        assert!(!ok && err.contains("is not the start of an object"), "{err}");
    }
}

/// The capture's own DAC (here: a planted file with the right version string) is not loaded
/// unless trusted; an admin store made with `dac-store add` serves the dump with nothing else
/// allowed; the findings and the log say which DAC was used, what was ignored and how the
/// worker was confined.
#[test]
fn a_capture_dac_is_ignored_and_the_dac_store_serves_the_dump() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core");
    let core_s = core.to_str().unwrap();
    let (ok, _, err) = dumpwatch(&["dump", &w.pid.to_string(), "-o", core_s, "--type", "heap"]);
    assert!(ok, "{err}");
    let beside = dir.path().join("libmscordaccore.so");
    let mut planted = std::fs::read(&beside).unwrap();
    planted.extend_from_slice(b"planted");
    std::fs::write(&beside, planted).unwrap();

    // Nothing trusted left: a clear refusal that names the ignored file and the ways out.
    let only = ["--no-local-runtime", "--no-symbol-server", "--histogram-only", "--json"];
    let (ok, _, err) = dumpwatch(&[&["analyze", core_s][..], &only].concat());
    assert!(!ok);
    assert!(err.contains("ignored the DAC") && err.contains(beside.to_str().unwrap()), "{err}");
    assert!(err.contains("--trust-dac-beside-dump") && err.contains("--dac-store"), "{err}");

    let store = dir.path().join("store");
    let dac = Runtime::Net8.shared_dir().join("libmscordaccore.so");
    let (ok, out, err) = dumpwatch(&["dac-store", "add", "--store", store.to_str().unwrap(), dac.to_str().unwrap()]);
    assert!(ok, "{err}");
    let entry = std::path::PathBuf::from(out.trim());
    assert!(entry.starts_with(&store) && entry.ends_with("libmscordaccore.so"), "{out}");
    assert!(entry.with_file_name("SHA256SUMS").is_file());

    let (ok, out, err) = dumpwatch(&[&["analyze", core_s, "--dac-store", store.to_str().unwrap()][..], &only].concat());
    assert!(ok, "{err}");
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["source"]["dac"], entry.to_str().unwrap());
    let warnings = f["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("ignored the DAC"), "{warnings:?}");
    assert!(err.contains("(from the DAC store)"), "{err}");
    assert!(err.contains("DAC worker sandbox:") && err.contains("landlock: enforced"), "{err}");
}
