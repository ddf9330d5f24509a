//! `diag` against real .NET 3.1 and 8 processes: discovery across namespaces, the fallbacks
//! between runtime versions, listen mode, dumps and the disk guard. The CLI's tests cover the
//! captures end to end (gcdump, stacks, watch).

use std::time::Duration;

use diag::Error;
use diag::client::{DiagnosticsClient, Endpoint};
use diag::discovery::ProcFs;
use diag::protocol::DumpType;
use testbed::{Isolation, Runtime, Workload};

fn client_for(w: &Workload) -> (diag::discovery::DotnetProcess, DiagnosticsClient) {
    let p = ProcFs::default().process(w.pid).expect("workload is reachable");
    let c = DiagnosticsClient::new(Endpoint::Socket(p.socket.clone()));
    (p, c)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn discovery_reaches_a_workload_in_its_own_pid_and_mount_namespace() {
    for runtime in Runtime::ALL {
        let iso = Isolation { own_namespaces: true, ..Default::default() };
        let w = Workload::start_with(runtime, "DiagScenarios", &[], &iso);
        assert_eq!(w.ready["pid"], 1, "the workload is pid 1 in its namespace");
        let p = ProcFs::default().process(w.pid).unwrap();
        assert_eq!(p.pid, w.pid);
        assert_eq!(p.ns_pid, 1);
        assert!(p.foreign_mount_ns, "private /tmp means another mount namespace");
        assert!(p.socket.starts_with(format!("/proc/{}/root/tmp", w.pid)), "{}", p.socket.display());
        assert!(!std::path::Path::new("/tmp").join(p.socket.file_name().unwrap()).exists() || p.ns_pid == w.pid);
        assert_eq!(p.runtime_version.as_deref(), Some(runtime.version()));
        assert!(p.dac_path().unwrap().exists(), "the DAC is reachable through /proc/<pid>/root");
        assert!(ProcFs::default().dotnet_processes().iter().any(|q| q.pid == w.pid));
        // And it answers over that socket.
        rt().block_on(async {
            let c = DiagnosticsClient::new(Endpoint::Socket(p.socket.clone()));
            let (id, _stream) =
                c.collect_tracing(&diag::counters::session_config(&["System.Runtime"], 1.0)).await.unwrap();
            c.stop_tracing(id).await.unwrap();
        });
    }
}

#[test]
fn process_info_on_8_and_a_typed_fallback_on_31() {
    let w8 = Workload::start(Runtime::Net8, "Idle", &[]);
    let (_, c8) = client_for(&w8);
    let info = rt().block_on(c8.process_info()).unwrap();
    assert_eq!(info.pid, w8.pid as u64);
    assert_eq!(info.os, "Linux");
    assert_eq!(info.arch, "x64");
    assert!(info.runtime_version.as_deref().unwrap_or("").starts_with("8.0.4"), "{info:?}");
    assert!(info.command_line.contains("Idle.dll"), "{info:?}");
    let env = rt().block_on(c8.environment()).unwrap();
    assert!(env.iter().any(|(k, v)| k == "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT" && v == "1"));

    let w31 = Workload::start(Runtime::Net31, "Idle", &[]);
    let (_, c31) = client_for(&w31);
    match rt().block_on(c31.process_info()) {
        Err(Error::Unsupported { .. } | Error::Runtime { .. }) => {}
        other => panic!("3.1 has no ProcessInfo; expected a typed refusal, got {other:?}"),
    }
}

#[test]
fn dump_writes_an_elf_core_with_the_dac_beside_it_and_no_partial_file() {
    for runtime in Runtime::ALL {
        let iso = Isolation { own_namespaces: runtime == Runtime::Net31, ..Default::default() };
        let w = Workload::start_with(runtime, "DiagScenarios", &[], &iso);
        let (p, c) = client_for(&w);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("core.test");
        let req = diag::dump::DumpRequest {
            process: &p,
            output: &out,
            dump_type: DumpType::WithHeap,
            min_free_bytes: 0,
            copy_dac: true,
        };
        let r = rt().block_on(diag::dump::write_dump(&c, &req)).unwrap();
        assert!(r.bytes > 10 << 20, "a heap dump of a running app is tens of MB, got {}", r.bytes);
        let header = std::process::Command::new("eu-readelf").arg("-h").arg(&out).output().unwrap();
        let text = String::from_utf8_lossy(&header.stdout);
        assert!(text.contains("CORE (Core file)"), "{text}");
        let dac = r.dac.expect("DAC copied");
        assert_eq!(
            std::fs::read(&dac).unwrap(),
            std::fs::read(runtime.shared_dir().join("libmscordaccore.so")).unwrap()
        );
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
        if iso.own_namespaces {
            let left: Vec<_> = std::fs::read_dir(format!("/proc/{}/root/tmp", w.pid))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains("partial"))
                .collect();
            assert!(left.is_empty(), "the copy in the target's /tmp is removed");
        }
    }
}

#[test]
fn dump_that_would_not_fit_is_refused_before_it_starts() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let (p, c) = client_for(&w);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("core.big");
    let free = diag::dump::available_bytes(dir.path()).unwrap();
    let req = diag::dump::DumpRequest {
        process: &p,
        output: &out,
        dump_type: DumpType::Full,
        min_free_bytes: free,
        copy_dac: true,
    };
    let err = rt().block_on(diag::dump::write_dump(&c, &req)).unwrap_err();
    assert!(matches!(err, Error::InsufficientDisk { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn listen_mode_accepts_a_suspended_runtime_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dumpwatch.sock");
    let rt = rt();
    let mut server = rt.block_on(async { diag::reverse::ReverseServer::bind(&sock) }).unwrap();
    let iso = Isolation {
        env: vec![("DOTNET_DiagnosticPorts".into(), format!("{},suspend", sock.display()))],
        ..Default::default()
    };
    // The runtime waits at startup until we resume it, so start it on another thread.
    let starter = std::thread::spawn(move || Workload::start_with(Runtime::Net8, "Idle", &[], &iso));
    rt.block_on(async {
        let runtime = tokio::time::timeout(Duration::from_secs(30), server.next_runtime()).await.unwrap().unwrap();
        let client = DiagnosticsClient::new(Endpoint::Reverse(runtime.clone()));
        let info = client.process_info().await.unwrap();
        assert_eq!(info.pid, runtime.pid());
        assert_eq!(info.runtime_cookie, runtime.cookie());
        client.resume_runtime().await.unwrap();
        // Once running, the runtime names its entrypoint assembly (what the sidecar calls the
        // process): the entry assembly, named after its file.
        let named = async {
            loop {
                match client.process_info().await.unwrap().entrypoint_assembly {
                    Some(name) if !name.is_empty() => return name,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        assert_eq!(tokio::time::timeout(Duration::from_secs(30), named).await.unwrap(), "Idle");
        // Commands keep working on fresh reverse connections after the resume.
        let (id, _s) = client.collect_tracing(&diag::counters::session_config(&["System.Runtime"], 1.0)).await.unwrap();
        client.stop_tracing(id).await.unwrap();
    });
    let w = starter.join().unwrap();
    assert_eq!(w.ready["pid"].as_u64(), Some(w.pid as u64));
}

#[test]
fn heap_snapshot_graph_holds_the_leak_chain_with_exact_counts() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let leaked = w.get("/leak?count=5000")["total_customers"].as_u64().unwrap();
        let (_, c) = client_for(&w);
        let snap = rt().block_on(diag::heap::capture(&c, true, None, Duration::from_secs(120), &mut |_| {})).unwrap();
        assert_eq!(snap.histogram.by_name("DiagScenarios.Customer").unwrap().count, leaked);
        let graph = snap.graph.expect("graph requested");
        assert_eq!(graph.nodes_of_type("DiagScenarios.Customer").len() as u64, leaked);
        let path = graph.shortest_path_by_type("DiagScenarios.Customer").expect("customers are reachable from a root");
        let text = path.to_string();
        for hop in ["DiagScenarios.Processor", "DiagScenarios.CustomerCache", "DiagScenarios.Customer[]"] {
            assert!(text.contains(hop), "{runtime:?}: {text}");
        }
        let stats = graph.stats();
        assert_eq!(graph.len() as u64, snap.nodes, "{runtime:?}: {stats:?}");
        eprintln!("{runtime:?}: {text} ({stats:?})");
    }
}

#[test]
fn discovery_follows_the_targets_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let iso = Isolation { env: vec![("TMPDIR".into(), dir.path().display().to_string())], ..Default::default() };
    let w = Workload::start_with(Runtime::Net8, "Idle", &[], &iso);
    let p = ProcFs::default().process(w.pid).unwrap();
    assert_eq!(p.tmpdir, dir.path().display().to_string());
    assert!(p.socket.to_string_lossy().contains(dir.path().to_str().unwrap().trim_start_matches('/')), "{p:?}");
    let info = rt().block_on(DiagnosticsClient::new(Endpoint::Socket(p.socket)).process_info()).unwrap();
    assert_eq!(info.pid, w.pid as u64);
}

#[test]
fn every_dump_type_is_written_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "Idle", &[]);
        let (p, c) = client_for(&w);
        let dir = tempfile::tempdir().unwrap();
        let mut sizes = Vec::new();
        for dump_type in [DumpType::Mini, DumpType::Triage, DumpType::WithHeap, DumpType::Full] {
            let out = dir.path().join(format!("core.{}", dump_type.name()));
            let req =
                diag::dump::DumpRequest { process: &p, output: &out, dump_type, min_free_bytes: 0, copy_dac: false };
            let r = rt()
                .block_on(diag::dump::write_dump(&c, &req))
                .unwrap_or_else(|e| panic!("{runtime:?} {dump_type:?}: {e}"));
            assert!(r.bytes > 0);
            sizes.push((dump_type, r.bytes));
        }
        let size = |t| sizes.iter().find(|(d, _)| *d == t).unwrap().1;
        assert!(size(DumpType::Mini) < size(DumpType::WithHeap), "{runtime:?}: {sizes:?}");
        assert!(size(DumpType::WithHeap) <= size(DumpType::Full), "{runtime:?}: {sizes:?}");
    }
}

/// ExceptionThrown exists on both runtimes: every exception the workload threw while the session
/// ran is there, with its type, message and the throwing method on top of its named stack.
#[test]
fn exceptions_are_seen_with_type_message_and_the_throwing_method_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let (_, c) = client_for(&w);
        let port = w.port;
        let thrower = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            let get = |path: &str| {
                let (status, body) = testbed::http_get(port, path, Duration::from_secs(30)).unwrap();
                assert_eq!(status, 200, "{path}: {body}");
                serde_json::from_str::<serde_json::Value>(&body).unwrap()
            };
            (get("/exceptions?count=3&type=timeout"), get("/exceptions?count=2"))
        });
        let captured =
            rt().block_on(diag::exceptions::capture(&c, Duration::from_secs(4), "*", 100, Duration::from_secs(60)));
        let (timeouts, invalid) = thrower.join().unwrap();
        let watched = captured.unwrap();
        let (seen, total) = (watched.exceptions, watched.thrown);
        assert_eq!(watched.matching, watched.thrown, "`*` matches every type");
        assert_eq!(timeouts["method"], "ThrowTimeout");
        let first_chance = invalid["first_chance_total"].as_u64().unwrap();
        assert_eq!(total, first_chance, "{runtime:?}: every first-chance exception, nothing else: {seen:#?}");
        assert_eq!(seen.len(), 5, "{runtime:?}: {seen:#?}");
        for (i, e) in seen.iter().enumerate() {
            let (ty, message, method) = if i < 3 {
                ("System.TimeoutException", format!("dumpwatch test timeout #{i}"), "ThrowTimeout")
            } else {
                ("System.InvalidOperationException", format!("dumpwatch test exception #{}", i - 3), "ThrowOne")
            };
            assert_eq!((e.exception_type.as_str(), e.message.as_str()), (ty, message.as_str()), "{runtime:?}");
            let top = e.stack.first().map(String::as_str).unwrap_or("");
            assert_eq!(top, format!("DiagScenarios.ExceptionScenario.{method}(int32)"), "{runtime:?}: {e:#?}");
            assert!(e.stack.iter().any(|f| f.starts_with("DiagScenarios.ExceptionScenario.Handle(")), "{e:#?}");
            assert!(!e.rethrown && e.unix_ns.is_some());
        }
    }
}
