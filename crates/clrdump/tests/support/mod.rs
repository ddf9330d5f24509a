//! What the tests on real dumps share: the worker binary and a heap dump of a workload.

use std::path::{Path, PathBuf};

use clrdump::WorkerCommand;
use testbed::Workload;

pub fn worker() -> WorkerCommand {
    WorkerCommand { program: PathBuf::from(env!("CARGO_BIN_EXE_clrdump-worker")), args: vec![] }
}

/// Writes a heap dump of `w` into `dir` (the DAC is copied beside it).
pub fn dump(w: &Workload, dir: &Path) -> PathBuf {
    let p = diag::discovery::ProcFs::default().process(w.pid).expect("workload reachable");
    let c = diag::client::DiagnosticsClient::new(diag::client::Endpoint::Socket(p.socket.clone()));
    let out = dir.join("core");
    let req = diag::dump::DumpRequest {
        process: &p,
        output: &out,
        dump_type: diag::protocol::DumpType::WithHeap,
        min_free_bytes: 0,
        copy_dac: true,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // createdump can lose a race with an exiting thread (the workload's request threads end
    // right after answering): "ptrace(ATTACH, tid) FAILED No such process". Retry that.
    for attempt in 1.. {
        match rt.block_on(diag::dump::write_dump(&c, &req)) {
            Ok(_) => break,
            Err(e) if attempt < 3 && e.to_string().contains("ptrace") => {
                std::thread::sleep(std::time::Duration::from_millis(300))
            }
            Err(e) => panic!("dump failed: {e}"),
        }
    }
    out
}
