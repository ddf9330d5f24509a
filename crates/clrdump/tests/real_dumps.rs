//! The reader and the DAC bridge against real heap dumps of .NET Core 3.1 and .NET 8
//! workloads, checked against the ground truth the workload reports about itself.

use std::path::PathBuf;

use clrdump::locate::Provenance;
use clrdump::{Depth, Error, ReadOptions, WorkerCommand};
use support::{dump, worker};
use testbed::{Runtime, Value, Workload};

mod support;

fn tids(list: &Value) -> Vec<u32> {
    let mut v: Vec<u32> = list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap() as u32).collect();
    v.sort_unstable();
    v
}

#[test]
fn threads_locks_and_an_exact_histogram_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let leak = w.get("/leak?count=1234");
        let total = leak["total_customers"].as_u64().unwrap();
        let dl = w.get("/deadlock?waiters=3");
        let dir = tempfile::tempdir().unwrap();
        let core = dump(&w, dir.path());

        // The DAC `dump` copied beside the core, trusted on purpose: the test wrote it.
        let mut opts = ReadOptions::new(worker(), Depth::Histogram);
        opts.trust.beside_dump = true;
        let d = clrdump::read_dump(&core, &opts).expect("read dump");
        assert_eq!(d.dac, dir.path().join("libmscordaccore.so"), "{runtime:?}: the DAC beside the dump");
        assert_eq!(d.provenance, Provenance::BesideDump);
        let s = &d.snapshot;
        assert!(s.runtime_version.is_some(), "{runtime:?}");
        assert!(s.warnings.is_empty(), "{runtime:?}: {:?}", s.warnings);

        let customers = s.types.iter().find(|t| t.name == "DiagScenarios.Customer").expect("Customer in histogram");
        assert_eq!(customers.count, total, "{runtime:?}: every Customer counted exactly once");
        assert_eq!(customers.bytes, total * 32, "{runtime:?}");
        assert_eq!(s.heap.resyncs, 0, "{runtime:?}: clean walk");

        // Every thread the workload reported is there with its managed id.
        let all: Vec<&Value> =
            dl["owners"].as_array().unwrap().iter().chain(dl["waiters"].as_array().unwrap()).collect();
        for t in all {
            let os = t["os_tid"].as_u64().unwrap() as u32;
            let th = s.threads.iter().find(|x| x.os_id == os).unwrap_or_else(|| panic!("{runtime:?}: thread {os}"));
            assert_eq!(th.managed_id as u64, t["managed_id"].as_u64().unwrap());
            assert!(th.frames.iter().any(|f| f.name.contains("DiagScenarios.Deadlocks.")), "{:?}", th.frames);
        }
        // Two locks held by the two owners; o1 has b and 3 waiters queued, o2 has a.
        let mut owners: Vec<u32> = s.sync_blocks.iter().filter(|b| b.held).filter_map(|b| b.owner_os_id).collect();
        owners.sort_unstable();
        assert_eq!(owners, tids(&dl["owners"]), "{runtime:?}");
        let mut waiters: Vec<u32> = s.sync_blocks.iter().map(|b| b.waiters).collect();
        waiters.sort_unstable();
        assert_eq!(waiters, vec![1, 4], "{runtime:?}");
    }
}

#[test]
fn truncated_and_corrupted_cores_are_typed_errors() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    let bytes = std::fs::read(&core).unwrap();
    let opts = ReadOptions::new(worker(), Depth::Histogram);

    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(clrdump::read_dump(&cut, &opts), Err(Error::Truncated { .. })));

    let headers_only = dir.path().join("headers");
    std::fs::write(&headers_only, &bytes[..100]).unwrap();
    assert!(matches!(clrdump::read_dump(&headers_only, &opts), Err(Error::Truncated { .. })));

    let not_elf = dir.path().join("text");
    std::fs::write(&not_elf, b"this is not a core dump at all, just text, long enough to be read fully........")
        .unwrap();
    assert!(matches!(clrdump::read_dump(&not_elf, &opts), Err(Error::NotACore(_))));

    // Flip the program header count to something absurd.
    let mut bad = bytes.clone();
    bad[56..58].copy_from_slice(&0x7fffu16.to_le_bytes());
    let badp = dir.path().join("badphnum");
    std::fs::write(&badp, &bad).unwrap();
    assert!(matches!(clrdump::read_dump(&badp, &opts), Err(Error::Truncated { .. } | Error::Corrupt(_))));

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(clrdump::read_dump(&empty, &opts), Err(Error::NotACore(_) | Error::Io { .. })));
}

#[test]
fn a_dac_of_another_runtime_is_refused() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    let mut opts = ReadOptions::new(worker(), Depth::Histogram);
    opts.dac = Some(Runtime::Net31.shared_dir().join("libmscordaccore.so"));
    match clrdump::read_dump(&core, &opts) {
        Err(Error::DacMismatch { dac_version, runtime_version, .. }) => {
            assert!(runtime_version.starts_with("8.0."), "{runtime_version}");
            assert!(dac_version.starts_with("4.700."), "{dac_version}");
        }
        other => panic!("expected DacMismatch, got {other:?}"),
    }
    // The only DAC beside the dump being the wrong one is the same clear error.
    std::fs::copy(Runtime::Net31.shared_dir().join("libmscordaccore.so"), dir.path().join("libmscordaccore.so"))
        .unwrap();
    let mut opts = ReadOptions::new(worker(), Depth::Histogram);
    opts.trust.beside_dump = true;
    // The runtime folder of the dumped process still has the right DAC: it is found there.
    let d = clrdump::read_dump(&core, &opts).expect("falls back to the runtime folder's DAC");
    assert_eq!(d.provenance, Provenance::LocalRuntime);
    assert_ne!(d.dac, dir.path().join("libmscordaccore.so"));
    assert!(d.dac.to_string_lossy().contains("8.0."), "{}", d.dac.display());
}

#[test]
fn a_crashing_worker_is_an_error_not_a_dead_caller() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    // A "worker" that dies from a signal, like a DAC segfault would.
    let cmd = WorkerCommand { program: PathBuf::from("/bin/sh"), args: vec!["-c".into(), "kill -SEGV $$".into()] };
    match clrdump::read_dump(&core, &ReadOptions::new(cmd, Depth::Histogram)) {
        Err(Error::Worker(msg)) => assert!(msg.contains("signal 11"), "{msg}"),
        other => panic!("expected a worker error, got {other:?}"),
    }
    let mut opts = ReadOptions::new(
        WorkerCommand { program: PathBuf::from("/bin/sh"), args: vec!["-c".into(), "sleep 30".into()] },
        Depth::Histogram,
    );
    opts.timeout = std::time::Duration::from_millis(300);
    assert!(matches!(clrdump::read_dump(&core, &opts), Err(Error::WorkerTimeout(_))));
}

#[test]
fn a_mini_dump_says_it_has_no_heap() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let p = diag::discovery::ProcFs::default().process(w.pid).expect("workload reachable");
    let c = diag::client::DiagnosticsClient::new(diag::client::Endpoint::Socket(p.socket.clone()));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("core");
    let req = diag::dump::DumpRequest {
        process: &p,
        output: &out,
        dump_type: diag::protocol::DumpType::Mini,
        min_free_bytes: 0,
        copy_dac: true,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(diag::dump::write_dump(&c, &req)).expect("dump written");
    for depth in [Depth::Histogram, Depth::Graph] {
        match clrdump::read_dump(&out, &ReadOptions::new(worker(), depth)) {
            Err(Error::Worker(msg)) => assert!(msg.contains("holds no GC heap"), "{msg}"),
            other => panic!("expected a no-heap error, got {other:?}"),
        }
    }
}

#[test]
fn the_runtime_build_id_read_from_the_dump_is_the_one_of_the_file_on_disk() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "Idle", &[]);
        let dir = tempfile::tempdir().unwrap();
        let core = dump(&w, dir.path());
        let truth = testbed::build_id_of_file(&runtime.shared_dir().join("libcoreclr.so"));
        assert_eq!(truth.len(), 20, "{runtime:?}: a SHA-1 build-id");
        let d = clrdump::core::CoreDump::open(&core).unwrap();
        let id = d.runtime_build_id().unwrap_or_else(|e| panic!("{runtime:?}: {e}"));
        assert_eq!(clrdump::buildid::hex(&id), clrdump::buildid::hex(&truth), "{runtime:?}");
        let key = clrdump::buildid::dac_symbol_key(&id).unwrap();
        assert_eq!(
            key,
            format!("libmscordaccore.so/elf-buildid-coreclr-{}/libmscordaccore.so", clrdump::buildid::hex(&truth))
        );
    }
}

/// The attack: the app pod plants its own "DAC" in the capture folder (it mounts it read-write).
/// Without an explicit opt-in the analyzer never loads it: it takes the runtime installed here
/// (same build-id) or, with local runtimes off, refuses with a message that says how to proceed.
#[test]
fn a_pod_cannot_make_the_analyzer_load_its_dac() {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    // The planted file carries the right version string: that alone must not make it trusted.
    let planted = dir.path().join("libmscordaccore.so");
    let mut bytes = std::fs::read(Runtime::Net8.shared_dir().join("libmscordaccore.so")).unwrap();
    bytes.extend_from_slice(b"planted by the pod");
    std::fs::write(&planted, &bytes).unwrap();

    let d = clrdump::read_dump(&core, &ReadOptions::new(worker(), Depth::Histogram)).expect("local runtime's DAC");
    assert_eq!(d.provenance, Provenance::LocalRuntime);
    assert_ne!(d.dac, planted);
    assert!(d.dac_warnings.iter().any(|w| w.contains("--trust-dac-beside-dump")), "{:?}", d.dac_warnings);

    let mut opts = ReadOptions::new(worker(), Depth::Histogram);
    opts.trust.local_runtimes = false;
    match clrdump::read_dump(&core, &opts) {
        Err(Error::DacNotFound { looked_in, .. }) => {
            assert!(looked_in.contains("ignored the DAC") && looked_in.contains("--dac-store"), "{looked_in}")
        }
        other => panic!("expected DacNotFound, got {other:?}"),
    }
}

/// The admin's store, laid out by `store_add` from the installed runtimes, serves both
/// runtimes by build-id with nothing else trusted; a store entry whose file changed after it
/// was listed is refused.
#[test]
fn the_dac_store_serves_dumps_by_build_id_on_both_runtimes() {
    let store = tempfile::tempdir().unwrap();
    for runtime in Runtime::ALL {
        clrdump::locate::store_add(store.path(), &runtime.shared_dir().join("libmscordaccore.so"), None).unwrap();
    }
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "Idle", &[]);
        let dir = tempfile::tempdir().unwrap();
        let core = dump(&w, dir.path());
        std::fs::remove_file(dir.path().join("libmscordaccore.so")).unwrap();
        let mut opts = ReadOptions::new(worker(), Depth::Histogram);
        opts.trust = clrdump::locate::Trust { store: Some(store.path().to_path_buf()), ..Default::default() };
        let d = clrdump::read_dump(&core, &opts).unwrap_or_else(|e| panic!("{runtime:?}: {e}"));
        assert_eq!(d.provenance, Provenance::Store, "{runtime:?}");
        assert!(d.dac.starts_with(store.path()), "{}", d.dac.display());
        assert!(!d.snapshot.threads.is_empty());
        if runtime == Runtime::Net8 {
            let mut bytes = std::fs::read(&d.dac).unwrap();
            bytes.push(0);
            std::fs::write(&d.dac, bytes).unwrap();
            assert!(matches!(clrdump::read_dump(&core, &opts), Err(Error::DacStore { .. })));
        }
    }
}
