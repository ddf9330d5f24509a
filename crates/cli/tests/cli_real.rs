//! The `dumpwatch` binary against real .NET 3.1 and 8 workloads, checked against the ground
//! truth the workload reports about itself (how many objects it leaked, which OS threads hold
//! which locks).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{Isolation, Runtime, Value, Workload};

fn dumpwatch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).output().expect("run dumpwatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dumpwatch_json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = dumpwatch(args);
    assert!(ok, "dumpwatch {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("dumpwatch {args:?}: bad JSON ({e}): {stdout}"))
}

fn os_tids(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

#[test]
fn ps_lists_workloads_in_other_namespaces_with_their_runtime() {
    let iso = Isolation { own_namespaces: true, ..Default::default() };
    let a = Workload::start_with(Runtime::Net31, "Idle", &[], &iso);
    let b = Workload::start(Runtime::Net8, "Idle", &[]);
    let procs = dumpwatch_json(&["ps", "--json"]);
    let find = |pid: u32| procs.as_array().unwrap().iter().find(|p| p["pid"] == pid).cloned();
    let pa = find(a.pid).expect("namespaced 3.1 workload listed");
    assert_eq!(pa["ns_pid"], 1);
    assert_eq!(pa["runtime_version"], "3.1.23");
    assert!(pa["command_line"].as_str().unwrap().contains("Idle.dll"));
    let pb = find(b.pid).expect("8.0 workload listed");
    assert_eq!(pb["runtime_version"], "8.0.4");
    let (ok, table, _) = dumpwatch(&["ps"]);
    assert!(ok && table.contains(&a.pid.to_string()) && table.contains("8.0.4"), "{table}");
}

#[test]
fn gcdump_counts_exactly_the_leaked_customers() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        w.get("/leak?count=12000");
        let truth = w.get("/leak?count=345");
        let leaked = truth["total_customers"].as_u64().unwrap();
        assert_eq!(leaked, 12345);
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("heap.nettrace");
        let report =
            dumpwatch_json(&["gcdump", &w.pid.to_string(), "--json", "--top", "1000", "-o", raw.to_str().unwrap()]);
        let types = report["types"].as_array().unwrap();
        let customer =
            types.iter().find(|t| t["type_name"] == "DiagScenarios.Customer").unwrap_or_else(|| panic!("{report:#}"));
        assert_eq!(customer["count"].as_u64(), Some(leaked), "{runtime:?}: exactly the leaked objects after a full GC");
        assert!(
            report["total_objects"].as_u64().unwrap() > leaked * 2,
            "customers plus their names plus the runtime's own"
        );
        assert!(std::fs::metadata(&raw).unwrap().len() > 100_000, "raw stream saved");
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(&bytes[..8], b"Nettrace");
    }
}

#[test]
fn gcdump_paths_name_the_static_that_holds_the_leak() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let leaked = w.get("/leak?count=20000")["total_customers"].as_u64().unwrap();
    let report = dumpwatch_json(&["gcdump", &w.pid.to_string(), "--json", "--paths", "5"]);
    let retainers = report["retainers"].as_array().unwrap();
    // The chain Processor → CustomerCache → List → array retains every customer and its
    // name: 96 bytes each (the workload's own measurement).
    let top = &retainers[0];
    assert!(top["retained_bytes"].as_u64().unwrap() >= leaked * 96, "{report:#}");
    let path = top["path"].as_str().unwrap();
    // A heap snapshot names the static field and its value's type, not the declaring type.
    assert!(path.starts_with("static Current → DiagScenarios.Processor"), "{path}");
    let names: Vec<&str> = retainers.iter().map(|r| r["type_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"DiagScenarios.CustomerCache"), "{names:?}");
    let (ok, text, _) = dumpwatch(&["gcdump", &w.pid.to_string(), "--paths", "3"]);
    assert!(ok && text.contains("via static Current → DiagScenarios.Processor"), "{text}");
}

#[test]
fn stacks_show_the_deadlocked_threads_inside_deadlock_func() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let truth = w.get("/deadlock?waiters=3");
        let owners = os_tids(&truth["owners"]);
        let waiters = os_tids(&truth["waiters"]);
        let report = dumpwatch_json(&["stacks", &w.pid.to_string(), "--json"]);
        let threads = report["threads"].as_array().unwrap();
        for tid in owners.iter().chain(&waiters) {
            let t = threads
                .iter()
                .find(|t| t["os_thread_id"] == *tid)
                .unwrap_or_else(|| panic!("{runtime:?}: thread {tid} missing: {report:#}"));
            let frames: Vec<&str> = t["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
            let expected = if owners.contains(tid) { "DeadlockFunc" } else { "WaiterFunc" };
            assert!(frames.iter().any(|f| f.contains(expected)), "{runtime:?} thread {tid}: {frames:#?}");
            // 3.1 shows the managed Monitor.Enter frame; on 8 `lock` enters native code
            // directly (an FCall), so the workload's method is the top managed frame.
            let top = frames[0];
            match runtime {
                Runtime::Net31 => assert!(top.contains("Monitor"), "{runtime:?} thread {tid}: {frames:#?}"),
                Runtime::Net8 => assert!(top.contains(expected), "{runtime:?} thread {tid}: {frames:#?}"),
            }
        }
        // The app keeps serving while those threads are stuck.
        assert_eq!(w.get("/health")["ok"], true);
    }
}

#[test]
fn watch_reports_the_two_thread_cycle_and_its_victims_within_two_seconds() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dumpwatch"))
        .args(["watch", &w.pid.to_string(), "--json", "--once", "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Give the session a moment to be established before the deadlock forms.
    std::thread::sleep(Duration::from_millis(1500));
    let truth = w.get("/deadlock?waiters=3");
    let formed = Instant::now();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let elapsed = formed.elapsed();
    let _ = child.wait();
    let finding: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let cycle: BTreeSet<u64> =
        finding["threads"].as_array().unwrap().iter().map(|t| t["os_thread_id"].as_u64().unwrap()).collect();
    assert_eq!(cycle, os_tids(&truth["owners"]), "{finding:#}");
    let victims: BTreeSet<u64> =
        finding["victims"].as_array().unwrap().iter().map(|t| t["os_thread_id"].as_u64().unwrap()).collect();
    assert_eq!(victims, os_tids(&truth["waiters"]), "{finding:#}");
    for t in finding["threads"].as_array().unwrap() {
        let stack: Vec<&str> = t["stack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert!(stack.iter().any(|f| f.contains("DeadlockFunc")), "{stack:#?}");
    }
    // The workload answers its HTTP request after the cycle has formed and then waits ~200 ms,
    // so this bound is measured from a moment slightly after the deadlock.
    assert!(elapsed <= Duration::from_secs(2), "reported {elapsed:?} after the deadlock formed");
    eprintln!("watch: deadlock reported {:.0} ms after the workload confirmed it", elapsed.as_secs_f64() * 1000.0);
}

#[test]
fn watch_refuses_31_with_advice() {
    let w = Workload::start(Runtime::Net31, "Idle", &[]);
    let (ok, _, stderr) = dumpwatch(&["watch", &w.pid.to_string(), "--duration", "1"]);
    assert!(!ok);
    assert!(stderr.contains(".NET 8") && stderr.contains("dumpwatch dump"), "{stderr}");
}

#[test]
fn counters_match_the_runtime_on_both_versions() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        w.get("/leak?count=50000");
        let report = dumpwatch_json(&["counters", &w.pid.to_string(), "--json", "--interval", "1"]);
        let c = &report["counters"];
        for name in [
            "cpu-usage",
            "working-set",
            "gc-heap-size",
            "threadpool-thread-count",
            "exception-count",
            "monitor-lock-contention-count",
        ] {
            assert!(c.get(name).is_some(), "{runtime:?}: {name} missing in {report:#}");
        }
        let heap_mb = c["gc-heap-size"]["value"].as_f64().unwrap();
        assert!(heap_mb >= 2.0, "{runtime:?}: 50k customers are several MB on the heap, counter says {heap_mb} MB");
    }
}

#[test]
fn dump_cli_writes_core_and_dac() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("core.idle");
    let r = dumpwatch_json(&["dump", &w.pid.to_string(), "-o", out.to_str().unwrap(), "--type", "heap", "--json"]);
    assert_eq!(r["dump_type"], "with-heap");
    assert!(out.exists());
    assert!(dir.path().join("libmscordaccore.so").exists());
    let (ok, _, stderr) = dumpwatch(&["dump", &w.pid.to_string(), "-o", out.to_str().unwrap()]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = dumpwatch(&["dump", "999999999"]);
    assert!(!ok && stderr.contains("cannot reach pid"), "{stderr}");
}

/// A CPU-bound request: the trace names the method that burns the CPU first, on the thread the
/// workload says, and writes a whole .nettrace and a speedscope profile of it.
#[test]
fn trace_names_the_hot_method_first_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let port = w.port;
        // Burns 6 s of CPU time on one request thread, which the 3 s trace samples part of
        // (started a second later: the request must be running, even on a loaded machine).
        let burner = std::thread::spawn(move || testbed::http_get(port, "/cpu?ms=6000", Duration::from_secs(180)));
        std::thread::sleep(Duration::from_secs(1));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cpu");
        let t =
            dumpwatch_json(&["trace", &w.pid.to_string(), "--duration", "3s", "-o", out.to_str().unwrap(), "--json"]);
        let (_, body) = burner.join().unwrap().expect("the /cpu request answers");
        let truth: Value = serde_json::from_str(&body).unwrap();

        let top = &t["top_methods"][0];
        assert!(top["method"].as_str().unwrap().starts_with("DiagScenarios.CpuScenario.BurnCpu"), "{runtime:?}: {t:#}");
        // Most of its time is in the CPU clock it reads (native: not counted), and a loaded
        // machine gives it less than the 3 s: a floor, not a rate.
        assert!(top["exclusive"].as_u64().unwrap() >= 30, "{runtime:?}: {t:#}");

        // The speedscope file: the burner's thread has BurnCpu in its samples.
        let profile: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("cpu.speedscope.json")).unwrap()).unwrap();
        assert_eq!(profile["$schema"], "https://www.speedscope.app/file-format-schema.json");
        // What speedscope.app reads: the file passes its published schema, and a profile whose
        // samples are not frame indices does not (the check can fail).
        let speedscope_file = dir.path().join("cpu.speedscope.json");
        testbed::validate_speedscope(&speedscope_file).unwrap_or_else(|e| panic!("{runtime:?}: {e}"));
        let mut broken = profile.clone();
        broken["profiles"][0]["samples"] = serde_json::json!([["BurnCpu"]]);
        let broken_file = dir.path().join("broken.speedscope.json");
        std::fs::write(&broken_file, broken.to_string()).unwrap();
        assert!(testbed::validate_speedscope(&broken_file).is_err(), "{runtime:?}: the schema check cannot fail");
        let frames = profile["shared"]["frames"].as_array().unwrap();
        let burn = frames.iter().position(|f| f["name"].as_str().unwrap().contains("BurnCpu")).expect("BurnCpu frame");
        let burner_profile = profile["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == format!("thread {}", truth["os_tid"]))
            .unwrap_or_else(|| panic!("{runtime:?}: no profile of the burning thread {}", truth["os_tid"]));
        let samples = burner_profile["samples"].as_array().unwrap();
        assert!(
            samples.iter().all(|s| s.as_array().unwrap().iter().all(|i| i.as_u64().unwrap() < frames.len() as u64))
        );
        assert!(samples.iter().any(|s| s.as_array().unwrap().contains(&Value::from(burn))), "{runtime:?}");
        assert_eq!(burner_profile["weights"].as_array().unwrap().len(), samples.len());

        // The raw trace is whole (a nettrace stream starts with its magic) and no partial is left.
        let raw = std::fs::read(dir.path().join("cpu.nettrace")).unwrap();
        assert!(raw.starts_with(b"Nettrace"), "{runtime:?}");
        assert!(!dir.path().join("cpu.nettrace.partial").exists());
    }
}

/// `exceptions --type` lists only the matching exceptions, with the throwing method on top, and
/// counts the others: 3 TimeoutExceptions among 5 exceptions, on both runtimes.
#[test]
fn exceptions_lists_the_matching_ones_with_their_throwing_method_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let port = w.port;
        let thrower = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            for path in ["/exceptions?count=2", "/exceptions?count=3&type=timeout"] {
                let (status, body) = testbed::http_get(port, path, Duration::from_secs(30)).unwrap();
                assert_eq!(status, 200, "{body}");
            }
        });
        let pid = w.pid.to_string();
        let out = dumpwatch_json(&["exceptions", &pid, "--duration", "5s", "--type", "System.*Timeout*", "--json"]);
        thrower.join().unwrap();
        let watched = &out["watched"];
        assert_eq!(
            (watched["thrown"].as_u64(), watched["matching"].as_u64()),
            (Some(5), Some(3)),
            "{runtime:?}: {out:#}"
        );
        let listed = watched["exceptions"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{runtime:?}: {out:#}");
        for (i, e) in listed.iter().enumerate() {
            assert_eq!(e["type"], "System.TimeoutException", "{out:#}");
            assert_eq!(e["message"], format!("dumpwatch test timeout #{i}"), "{out:#}");
            assert_eq!(e["stack"][0], "DiagScenarios.ExceptionScenario.ThrowTimeout(int32)", "{runtime:?}: {out:#}");
        }
        let (ok, help, _) = dumpwatch(&["exceptions", "--help"]);
        assert!(ok && help.contains("First chance") && help.contains("System.*Timeout*"), "{help}");
    }
}
