//! The sidecar binary against real .NET 8 and 3.1 workloads, in connect mode (workload in its
//! own PID + mount namespace, reached through /proc) and listen mode (DOTNET_DiagnosticPorts).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use testbed::{Runtime, Value};

const S: Duration = Duration::from_secs(1);

fn tids(v: &Value) -> BTreeSet<u64> {
    v.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().or_else(|| t["thread"].as_u64()).unwrap()).collect()
}

/// Trigger a deadlock and check the finding (within 2 s of the workload's answer) and the capture.
fn deadlock_is_found_and_captured(sc: &Sidecar, w: &testbed::Workload) {
    let dl = w.get("/deadlock?waiters=2");
    let answered = Instant::now();
    let pid = Value::from(w.pid);
    let finding = sc.wait_for("the deadlock finding", 2 * S, || sc.findings().into_iter().find(|f| f["pid"] == pid));
    let latency = answered.elapsed();
    assert_eq!(tids(&finding["cycle"]), tids(&dl["owners"]), "{finding:#}");
    assert_eq!(tids(&finding["victims"]), tids(&dl["waiters"]), "{finding:#}");
    let pid_label = format!("pid=\"{}\"", w.pid);
    sc.wait_for("dumpwatch_deadlocked_threads = 2", 5 * S, || {
        sc.metric("dumpwatch_deadlocked_threads", &[&pid_label]).filter(|&v| v == 2.0)
    });
    // Two owners and two waiters blocked: at least four ContentionStart events were seen.
    let seen = sc.metric("dumpwatch_contention_events_total", &[&pid_label]).unwrap_or(0.0);
    assert!(seen >= 4.0, "dumpwatch_contention_events_total = {seen}");
    let dir = sc.wait_for("the deadlock capture", 60 * S, || sc.captures().into_iter().next());
    let m = manifest(&dir);
    assert_eq!(m["trigger"]["trigger"], "deadlock");
    assert_eq!(m["pod"], "test-pod");
    assert_eq!(m["process"]["pid"], pid);
    let stacks = std::fs::read_to_string(dir.join("stacks.json")).unwrap();
    assert!(stacks.contains("DeadlockFunc"), "the owners' frames are named");
    let found: Value = serde_json::from_slice(&std::fs::read(dir.join("finding.json")).unwrap()).unwrap();
    assert_eq!(tids(&found["cycle"]), tids(&dl["owners"]));
    // The capture's stacks name the owners' frames in the finding it carries (what the operator's
    // Event says), not only in the later symbolized finding on /findings.
    for owner in found["cycle"].as_array().unwrap() {
        assert!(owner["stack"].to_string().contains("DeadlockFunc"), "{found:#}");
    }
    assert_eq!(m["finding"]["cycle"], found["cycle"], "the manifest carries the same finding");
    // The symbolized version of the finding follows the raw one.
    let named = sc.wait_for("a symbolized finding", 30 * S, || {
        sc.findings().into_iter().find(|f| f["pid"] == pid && f["symbolized"] == true)
    });
    assert!(named["cycle"].to_string().contains("DeadlockFunc"), "{named:#}");
    eprintln!("deadlock finding {} ms after the workload answered", latency.as_millis());
}

#[test]
fn connect_mode_net8_in_own_namespaces_metrics_match_and_deadlock_is_found_live() {
    let sc = Sidecar::start(
        "c8",
        "mode: connect\ntriggers: [{type: deadlock, capture: [stacks]}]\nlimits: {cooldown: 5s}\n",
    );
    let w = start(&sc, Runtime::Net8, true, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("metrics of the workload", 30 * S, || sc.metric("dotnet_gc_heap_size_bytes", &[&pid]));
    assert!(sc.metrics().contains(&format!("{pid},process=\"DiagScenarios\"")));
    let thrown = w.get("/exceptions?count=7")["first_chance_total"].as_f64().unwrap();
    sc.wait_for("dotnet_exceptions_total = the workload's count", 10 * S, || {
        sc.metric("dotnet_exceptions_total", &[&pid]).filter(|&v| v == thrown)
    });
    let total = w.get("/leak?kb=40000")["total_customers"].as_u64().unwrap();
    let memory = w.get("/truth")["total_memory"].as_f64().unwrap();
    let heap = sc.wait_for("the heap metric to show the leak", 10 * S, || {
        sc.metric("dotnet_gc_heap_size_bytes", &[&pid]).filter(|&v| v > 40e6)
    });
    assert!((heap - memory).abs() / memory < 0.2, "metric {heap} vs GC.GetTotalMemory {memory} ({total} customers)");
    assert_eq!(sc.metric("dumpwatch_live_deadlock_detection_unavailable", &[&pid]), None);
    deadlock_is_found_and_captured(&sc, &w);
}

#[test]
fn listen_mode_net8_resumes_a_suspended_runtime_and_finds_its_deadlock() {
    let sc =
        Sidecar::start("l8", "mode: listen\ntriggers: [{type: deadlock, capture: [stacks]}]\nlimits: {cooldown: 5s}\n");
    // The runtime waits at startup until the sidecar resumes it: the ready line proves it did.
    let started = Instant::now();
    let w = start(&sc, Runtime::Net8, false, true, &[]);
    eprintln!("suspended runtime started in {} ms", started.elapsed().as_millis());
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("metrics of the workload", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    assert!(sc.metrics().contains("dumpwatch_watched_processes 1"), "watched once, not also through /proc");
    // Named by the runtime's own answer (the entrypoint assembly), as in connect mode.
    assert!(sc.metrics().contains(&format!("{pid},process=\"DiagScenarios\"")), "{}", sc.metrics());
    // .NET Core 3.1 ignores DOTNET_DiagnosticPorts: the sidecar reaches it through /proc.
    let old = start(&sc, Runtime::Net31, true, true, &[]);
    let old_pid = format!("pid=\"{}\"", old.pid);
    sc.wait_for("the 3.1 process, through /proc", 30 * S, || {
        sc.metric("dumpwatch_live_deadlock_detection_unavailable", &[&old_pid])
    });
    assert!(sc.metrics().contains("dumpwatch_watched_processes 2"));
    deadlock_is_found_and_captured(&sc, &w);
}

#[test]
fn net31_metrics_match_says_no_live_deadlock_detection_and_heap_snapshot_on_demand() {
    let policy = "mode: connect\ntriggers: [{type: onDemand}]\ncapture: {kinds: [gcdump, stacks], topTypes: 10}\n";
    let sc = Sidecar::start("c31", policy);
    let w = start(&sc, Runtime::Net31, true, false, &["--leak-count", "100000"]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("live detection marked unavailable", 30 * S, || {
        sc.metric("dumpwatch_live_deadlock_detection_unavailable", &[&pid]).filter(|&v| v == 1.0)
    });
    let thrown = w.get("/exceptions?count=5")["first_chance_total"].as_f64().unwrap();
    sc.wait_for("dotnet_exceptions_total = the workload's count", 10 * S, || {
        sc.metric("dotnet_exceptions_total", &[&pid]).filter(|&v| v == thrown)
    });
    nix_kill_usr1(sc.child.id());
    let dir = sc.wait_for("the on-demand capture", 120 * S, || sc.captures().into_iter().next());
    let m = manifest(&dir);
    assert_eq!(m["trigger"]["trigger"], "onDemand");
    assert_eq!(m["process"]["runtime_version"], "3.1.23");
    let hist: Value = serde_json::from_slice(&std::fs::read(dir.join("histogram.json")).unwrap()).unwrap();
    let customers =
        hist["types"].as_array().unwrap().iter().find(|t| t["type_name"] == "DiagScenarios.Customer").unwrap();
    assert_eq!(customers["count"], 100000);
    let files: Vec<String> =
        m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().into()).collect();
    assert_eq!(files, ["heap.nettrace", "histogram.json", "stacks.json"]);
    for f in m["files"].as_array().unwrap() {
        let (len, sha256) = store::sha256_file(&dir.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!((f["bytes"].as_u64(), f["sha256"].as_str()), (Some(len), Some(sha256.as_str())));
    }
    let customer_bytes = sc.wait_for("dotnet_heap_type_bytes for the leaked type", 5 * S, || {
        sc.metric("dotnet_heap_type_bytes", &[&pid, "type=\"DiagScenarios.Customer\""])
    });
    assert_eq!(customer_bytes, 100000.0 * 32.0);
}

#[test]
fn a_leak_over_the_threshold_dumps_exactly_once_while_it_stays_high() {
    let policy = "mode: connect\ntriggers: [{type: gcHeapBytes, above: 50Mi, for: 1s}]\n\
                  capture: {kinds: [dump], dumpType: mini}\nlimits: {cooldown: 1m, maxPerHour: 10}\n";
    let sc = Sidecar::start("leak", policy);
    let w = start(&sc, Runtime::Net8, false, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("metrics of the workload", 30 * S, || sc.metric("dotnet_gc_heap_size_bytes", &[&pid]));
    w.get("/leak?kb=80000");
    let dir = sc.wait_for("the dump", 60 * S, || sc.captures().into_iter().next());
    // The heap stays high: no second firing, no second dump.
    std::thread::sleep(6 * S);
    assert!(sc.metric("dotnet_gc_heap_size_bytes", &[&pid]).unwrap() > 50.0 * 1048576.0, "still high");
    assert_eq!(sc.captures().len(), 1);
    assert_eq!(sc.metric("dumpwatch_triggers_total", &[&pid, "trigger=\"gcHeapBytes\""]), Some(1.0));
    assert_eq!(sc.metric("dumpwatch_captures_total", &["kind=\"dump\"", "result=\"success\""]), Some(1.0));
    let m = manifest(&dir);
    assert!(m["trigger"]["value"].as_f64().unwrap() > 50.0 * 1048576.0, "{m:#}");
    let names: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("core.{}", w.pid).as_str(), "libmscordaccore.so"]);
    assert!(w.get("/health")["ok"].as_bool().unwrap());
}

#[test]
fn a_50_mib_budget_is_never_exceeded() {
    let policy = "mode: connect\ncounterInterval: 1s\ntriggers: [{type: schedule, every: 1s}]\n\
                  capture: {kinds: [gcdump]}\nlimits: {cooldown: 1s, maxPerHour: 1000, maxBytes: 50Mi}\n";
    let sc = Sidecar::start("budget", policy);
    let _w = start(&sc, Runtime::Net8, false, false, &["--leak-count", "150000"]);
    let budget = 50 * 1024 * 1024;
    let mut peak = 0;
    let until = Instant::now() + 25 * S;
    while Instant::now() < until {
        peak = peak.max(dir_bytes(&sc.store));
        assert!(peak <= budget, "store holds {peak} B > 50 MiB");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = sc.metric("dumpwatch_captures_total", &["kind=\"gcdump\"", "result=\"success\""]).unwrap_or(0.0);
    let refused = sc.metric("dumpwatch_captures_total", &["kind=\"gcdump\"", "result=\"over_budget\""]).unwrap_or(0.0);
    eprintln!("peak {peak} B, {ok} captures, {refused} refused for the budget");
    assert!(ok >= 1.0 && refused >= 1.0, "the budget was reached and then held: {ok} ok, {refused} refused");
}

/// Names of the completed captures, oldest first, with their manifests' modification times.
fn stored(sc: &Sidecar) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = sc
        .captures()
        .into_iter()
        .filter_map(|d| {
            let t = std::fs::metadata(d.join("manifest.json")).ok()?.modified().ok()?;
            Some((d.file_name()?.to_string_lossy().into_owned(), t))
        })
        .collect();
    v.sort_by_key(|(_, t)| *t);
    v
}

#[test]
fn retention_keeps_the_newest_max_count_and_sweeps_by_age() {
    // A capture (stacks only) every second; keep 2.
    let policy = "mode: connect\ntriggers: [{type: schedule, every: 1s}]\ncapture: {kinds: [stacks]}\n\
                  limits: {cooldown: 1s, maxPerHour: 1000}\nretention: {maxCount: 2, maxAge: 1h}\n";
    let sc = Sidecar::start("retention", policy);
    let _w = start(&sc, Runtime::Net8, false, false, &[]);
    let ok = || sc.metric("dumpwatch_captures_total", &["kind=\"stacks\"", "result=\"success\""]).unwrap_or(0.0);
    let mut seen = std::collections::BTreeSet::new();
    let until = Instant::now() + 60 * S;
    while ok() < 5.0 {
        assert!(Instant::now() < until, "5 captures within 60 s; {} so far", ok());
        let now = stored(&sc);
        assert!(now.len() <= 2, "{} captures kept, maxCount is 2: {now:?}", now.len());
        seen.extend(now.into_iter().map(|(n, _)| n));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.len() >= 4, "captures came and went: {seen:?}");
    // What is kept is the newest (capture names start with their UTC time stamp).
    let kept: Vec<String> = stored(&sc).into_iter().map(|(n, _)| n).collect();
    let oldest_kept = kept.iter().min().expect("captures kept");
    for gone in seen.iter().filter(|n| !kept.contains(n)) {
        assert!(gone < oldest_kept, "{gone} was deleted but is newer than kept {kept:?}");
    }

    // Age: switch the policy (reload) to maxAge 3s and no new captures; everything goes.
    let quiet = "mode: connect\ncapture: {kinds: [stacks]}\nretention: {maxCount: 10, maxAge: 3s}\n";
    std::fs::write(&sc.policy, quiet).unwrap();
    let gone = Instant::now();
    sc.wait_for("captures older than 3 s swept", 30 * S, || stored(&sc).is_empty().then_some(()));
    eprintln!("swept {} ms after the reload", gone.elapsed().as_millis());
}

#[test]
fn a_restarted_workload_is_released_and_rediscovered() {
    let sc = Sidecar::start("restart", "mode: connect\n");
    let w1 = start(&sc, Runtime::Net31, true, false, &[]);
    let pid1 = format!("pid=\"{}\"", w1.pid);
    sc.wait_for("the first process", 30 * S, || sc.metric("dotnet_working_set_bytes", &[&pid1]));
    drop(w1);
    sc.wait_for("the first process released", 10 * S, || {
        (!sc.metrics().contains(&pid1) && sc.metrics().contains("dumpwatch_watched_processes 0")).then_some(())
    });
    let w2 = start(&sc, Runtime::Net31, true, false, &[]);
    let pid2 = format!("pid=\"{}\"", w2.pid);
    sc.wait_for("the restarted process", 30 * S, || sc.metric("dotnet_working_set_bytes", &[&pid2]));
}

#[test]
fn killing_the_sidecar_mid_dump_leaves_no_partial_file_and_the_app_running() {
    let dir = shared_dir();
    let request = dir.path().join("capture-now");
    let policy = format!(
        "mode: connect\ntriggers: [{{type: onDemand, file: {}}}]\ncapture: {{kinds: [dump], dumpType: full}}\n",
        request.display()
    );
    let mut sc = Sidecar::start("kill", &policy);
    let w = start(&sc, Runtime::Net8, false, false, &["--leak-count", "1000000"]);
    sc.wait_for("the process watched", 30 * S, || {
        sc.metric("dotnet_gc_heap_size_bytes", &[&format!("pid=\"{}\"", w.pid)])
    });
    std::fs::write(&request, b"").unwrap();
    let pending = sc.wait_for("the capture to start", 20 * S, || {
        std::fs::read_dir(&sc.store).ok()?.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("/.tmp-"))
    });
    sc.wait_for("the dump to be half written", 20 * S, || (dir_bytes(&pending) > 1 << 20).then_some(()));
    sc.kill();
    assert!(sc.captures().is_empty(), "nothing half-written is visible");
    assert!(w.get("/health")["ok"].as_bool().unwrap(), "the app keeps running");
    sc.restart();
    // The restarted sidecar sweeps the interrupted capture away (createdump may still be
    // finishing into the removed folder; nothing of it is reachable).
    sc.wait_for("the leftovers swept", 30 * S, || {
        // The pod's capture log (`.state`) is kept on purpose; what an interrupted capture leaves
        // is hidden otherwise.
        let left: Vec<_> = std::fs::read_dir(&sc.store)
            .unwrap()
            .flatten()
            .filter(|e| hidden(&e.path()) && e.file_name() != ".state")
            .collect();
        left.is_empty().then_some(())
    });
    std::thread::sleep(3 * S);
    assert!(sc.captures().is_empty());
    assert!(w.get("/health")["ok"].as_bool().unwrap());
}

fn nix_kill_usr1(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-USR1", &pid.to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn short_lived_processes_are_picked_up_and_released() {
    let sc = Sidecar::start("churn", "mode: connect\ntriggers: [{type: deadlock}]\n");
    let mut seen = 0;
    for round in 0..6 {
        let runtime = if round % 2 == 0 { Runtime::Net8 } else { Runtime::Net31 };
        let w =
            testbed::Workload::start_with(runtime, "Idle", &["--exit-after-ms", "2500"], &sc.isolation(false, false));
        let pid = format!("pid=\"{}\"", w.pid);
        let picked = sc.wait_for("the short-lived process, or its exit", 10 * S, || {
            if sc.metrics().contains(&pid) {
                Some(true)
            } else if !std::path::Path::new(&format!("/proc/{}", w.pid)).exists() {
                Some(false)
            } else {
                None
            }
        });
        seen += picked as u32;
        drop(w);
    }
    assert!(seen >= 5, "picked up {seen} of 6");
    sc.wait_for("every process released", 10 * S, || {
        let m = sc.metrics();
        (m.contains("dumpwatch_watched_processes 0") && !m.contains("dotnet_working_set_bytes{")).then_some(())
    });
}

/// A real unhandled exception, on both runtimes: .NET Core 3.1 reads only the `COMPlus_`
/// spellings of the crash-dump settings and names its dump `core.0x<pid>`.
#[test]
fn an_unhandled_exception_becomes_a_crash_capture_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let sc = Sidecar::start(&format!("crash-{runtime:?}"), "mode: connect\ntriggers: [{type: crash}]\n");
        let mut iso = sc.isolation(false, false);
        iso.env.extend(sidecar::crash::app_environment(&sc.store));
        let w = testbed::Workload::start_with(runtime, "DiagScenarios", &[], &iso);
        let pid = format!("pid=\"{}\"", w.pid);
        sc.wait_for("the process watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
        let version = runtime.version();
        let dac = format!(".dac/{version}/libmscordaccore.so");
        sc.wait_for("the DAC kept", 10 * S, || sc.store.join(&dac).exists().then_some(()));
        w.get("/crash?delay_ms=100");
        let dir = sc.wait_for("the crash capture", 60 * S, || sc.captures().into_iter().next());
        let m = manifest(&dir);
        assert_eq!(m["trigger"]["trigger"], "crash", "{runtime:?}");
        assert_eq!(m["process"]["name"], "DiagScenarios", "{runtime:?}: the pid in the dump's name was read");
        assert_eq!(m["process"]["pid"], Value::from(w.pid), "{runtime:?}");
        let names: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"libmscordaccore.so"), "{runtime:?}: {names:?}");
        assert_eq!(names.contains(&"crashreport.json"), runtime == Runtime::Net8, "{runtime:?}: {names:?}");
    }
}

#[test]
fn a_crash_dump_written_by_the_runtime_becomes_a_capture_with_its_dac() {
    let sc = Sidecar::start("crash", "mode: connect\ntriggers: [{type: crash}]\n");
    let mut iso = sc.isolation(false, false);
    iso.env.extend(sidecar::crash::app_environment(&sc.store));
    let w = testbed::Workload::start_with(Runtime::Net8, "Idle", &[], &iso);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("the process watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    // The DAC is kept while the process is alive: after the crash, /proc/<pid>/root is gone.
    sc.wait_for("the DAC kept", 10 * S, || sc.store.join(".dac/8.0.4/libmscordaccore.so").exists().then_some(()));
    // An abort sent from outside makes the runtime write its crash dump exactly as a real
    // crash does (the .NET 8 runtime then keeps running: quirk of signals sent with kill).
    let ok = std::process::Command::new("kill").args(["-ABRT", &w.pid.to_string()]).status().unwrap().success();
    assert!(ok);
    let dir = sc.wait_for("the crash capture", 60 * S, || sc.captures().into_iter().next());
    let m = manifest(&dir);
    assert_eq!(m["trigger"]["trigger"], "crash");
    assert_eq!(m["process"]["name"], "Idle");
    let names: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("core.{}", w.pid).as_str(), "crashreport.json", "libmscordaccore.so"]);
    assert_eq!(std::fs::read_dir(sc.store.join(".crash")).unwrap().count(), 0, "moved, not copied");
}

/// `maxPerHour` is the pod's, not a process's or a sidecar's: a restarted runtime and a restarted
/// sidecar (killed, no clean-up) find the hour's captures in the capture volume's log.
#[test]
fn the_hourly_cap_survives_a_restarted_runtime_and_a_restarted_sidecar() {
    let policy = "mode: connect\ncounterInterval: 1s\ntriggers: [{type: schedule, every: 1s}]\ncapture: {kinds: [stacks]}\n\
                  limits: {cooldown: 1s, maxPerHour: 2}\nretention: {maxCount: 10, maxAge: 1h}\n";
    let mut sc = Sidecar::start("hourly-cap", policy);
    let captures = |sc: &Sidecar, result: &str| {
        sc.metric("dumpwatch_captures_total", &["kind=\"stacks\"", &format!("result=\"{result}\"")]).unwrap_or(0.0)
    };
    let w = start(&sc, Runtime::Net8, false, false, &[]);
    sc.wait_for("two captures, then the cap", 60 * S, || (captures(&sc, "rate_limited") > 0.0).then_some(()));
    assert_eq!(captures(&sc, "success"), 2.0);
    drop(w);

    // A new runtime and a new sidecar on the same capture volume: still capped.
    sc.restart();
    let w = start(&sc, Runtime::Net8, false, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("the new runtime watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    sc.wait_for("its schedule refused by the pod's cap", 30 * S, || {
        (captures(&sc, "rate_limited") > 0.0).then_some(())
    });
    assert_eq!(captures(&sc, "success"), 0.0, "the restarted sidecar took no capture in the same hour");
    assert_eq!(sc.captures().len(), 2, "only the first sidecar's two captures are stored");
}

/// dotnet-monitor's standard rule, high CPU → a CPU trace: the trace capture names the method
/// that burns the CPU, with the raw trace and a speedscope profile beside it.
#[test]
fn high_cpu_takes_a_trace_that_names_the_hot_method() {
    let policy = "mode: connect\ncounterInterval: 1s\n\
                  triggers: [{type: cpu, above: 30%, for: 1s, capture: [trace]}]\ncapture: {traceDuration: 3s}\n";
    let sc = Sidecar::start("cpu-trace", policy);
    let w = start(&sc, Runtime::Net8, false, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("the process watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    let port = w.port;
    let burner = std::thread::spawn(move || testbed::http_get(port, "/cpu?ms=10000", 180 * S));
    let dir = sc.wait_for("the trace capture", 90 * S, || sc.captures().into_iter().next());
    let m = manifest(&dir);
    assert_eq!(m["trigger"]["trigger"], "cpu");
    let names: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for f in ["trace.nettrace", "trace.speedscope.json", "trace-summary.json"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.join("trace-summary.json")).unwrap()).unwrap();
    let top = summary["top_methods"][0]["method"].as_str().unwrap_or("");
    assert!(top.starts_with("DiagScenarios.CpuScenario.BurnCpu"), "{summary:#}");
    testbed::validate_speedscope(&dir.join("trace.speedscope.json"))
        .unwrap_or_else(|e| panic!("speedscope schema: {e}"));
    let _ = burner.join();
}
