//! Finding .NET processes and their diagnostics sockets through `/proc`.
//!
//! A runtime creates `dotnet-diagnostic-<pid>-<start key>-socket` in its own `$TMPDIR` (or
//! `/tmp`), where `<pid>` is its pid *inside its PID namespace*. A sidecar that shares the PID
//! namespace but not the mount namespace (a pod with `shareProcessNamespace`, or a private
//! `/tmp`) reaches that directory through `/proc/<pid>/root`, which the kernel resolves in the
//! target's mount namespace. We therefore always go through `/proc/<pid>/root`: for a process
//! in our own mount namespace it is simply `/`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// A .NET process as seen from `/proc`, with everything needed to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DotnetProcess {
    /// The pid in *our* PID namespace (what `kill` and `/proc` use).
    pub pid: u32,
    /// The pid inside the process's own PID namespace (what the runtime calls itself).
    pub ns_pid: u32,
    /// The diagnostics socket, as a path we can open.
    pub socket: PathBuf,
    pub command_line: String,
    /// The shared runtime folder (as seen from us, through `/proc/<pid>/root`) that holds
    /// `libcoreclr.so`, `createdump` and `libmscordaccore.so`.
    pub runtime_dir: Option<PathBuf>,
    /// Version taken from the runtime folder's name (`.../Microsoft.NETCore.App/8.0.4/`).
    pub runtime_version: Option<String>,
    /// The target's temp dir inside its own mount namespace.
    pub tmpdir: String,
    /// Whether the process lives in another mount namespace than ours (its `/tmp` differs).
    pub foreign_mount_ns: bool,
}

impl DotnetProcess {
    /// The DAC that matches this runtime, if the runtime folder is known.
    pub fn dac_path(&self) -> Option<PathBuf> {
        self.runtime_dir.as_ref().map(|d| d.join("libmscordaccore.so"))
    }

    /// Major version of the runtime, when known (3 for 3.1, 8 for 8.0...).
    pub fn runtime_major(&self) -> Option<u32> {
        self.runtime_version.as_deref()?.split('.').next()?.parse().ok()
    }
}

/// Where `/proc` is: tests of namespace handling may point elsewhere.
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self { root: PathBuf::from("/proc") }
    }
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Every process that has a diagnostics socket we can reach, sorted by pid. Processes that
    /// vanish or deny access while we look are skipped: this is a snapshot, not a guarantee.
    pub fn dotnet_processes(&self) -> Vec<DotnetProcess> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let mut out: Vec<DotnetProcess> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id())
            .filter_map(|pid| self.process(pid).ok())
            .collect();
        out.sort_by_key(|p| p.pid);
        out
    }

    /// Look at one pid; the error says why it cannot be used.
    pub fn process(&self, pid: u32) -> Result<DotnetProcess, Error> {
        let dir = self.root.join(pid.to_string());
        let no = |reason: String| Error::NoEndpoint { pid, reason };
        let status =
            fs::read_to_string(dir.join("status")).map_err(|e| no(format!("cannot read /proc/{pid}/status: {e}")))?;
        let ns_pid = parse_ns_pid(&status).unwrap_or(pid);
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        // Kernel threads have no command line: a stale socket of a dead namespaced process with
        // the same small pid must not make one look like .NET.
        if cmdline.is_empty() {
            return Err(no("no command line (a kernel thread or a zombie)".into()));
        }
        let start_key = fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(start_time);
        let environ = fs::read(dir.join("environ")).unwrap_or_default();
        let tmpdir = tmpdir_from_environ(&environ);
        let root = dir.join("root");
        let search_dir = join_inside(&root, &tmpdir);
        let socket = find_socket(&search_dir, ns_pid, start_key).ok_or_else(|| {
            no(format!(
                "no dotnet-diagnostic-{ns_pid}-*-socket in {} (not .NET, diagnostics disabled with DOTNET_EnableDiagnostics=0, or no permission)",
                search_dir.display()
            ))
        })?;
        let maps = fs::read_to_string(dir.join("maps")).unwrap_or_default();
        let runtime_dir_inside = runtime_dir_from_maps(&maps);
        let runtime_version = runtime_dir_inside.as_deref().and_then(version_from_runtime_dir);
        Ok(DotnetProcess {
            pid,
            ns_pid,
            socket,
            command_line: command_line_from_cmdline(&cmdline),
            runtime_dir: runtime_dir_inside.map(|d| join_inside(&root, &d)),
            runtime_version,
            tmpdir,
            foreign_mount_ns: !same_mount_ns(&self.root, pid),
        })
    }
}

/// `/proc/<pid>/status` has `NSpid: 4711 12 1` when the process is in nested PID namespaces;
/// the last value is its pid in the innermost one, the one the runtime uses in file names.
pub fn parse_ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line["NSpid:".len()..].split_whitespace().last()?.parse().ok()
}

/// The runtime uses `$TMPDIR` when it is set and not empty, else `/tmp`.
pub fn tmpdir_from_environ(environ: &[u8]) -> String {
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"TMPDIR="))
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .next_back()
        .unwrap_or_else(|| "/tmp".to_string())
}

fn command_line_from_cmdline(cmdline: &[u8]) -> String {
    let parts: Vec<String> =
        cmdline.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    parts.join(" ")
}

/// The folder of the mapped `libcoreclr.so`, as a path inside the process's mount namespace.
pub fn runtime_dir_from_maps(maps: &str) -> Option<String> {
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let dir = path.strip_suffix("/libcoreclr.so")?;
        Some(dir.to_string())
    })
}

/// `.../Microsoft.NETCore.App/8.0.4` → `8.0.4`.
pub fn version_from_runtime_dir(dir: &str) -> Option<String> {
    let last = Path::new(dir).file_name()?.to_str()?;
    let looks_like_version = last.split('.').next()?.parse::<u32>().is_ok();
    looks_like_version.then(|| last.to_string())
}

/// `root` joined with an absolute path from inside the namespace.
fn join_inside(root: &Path, inside: &str) -> PathBuf {
    root.join(inside.trim_start_matches('/'))
}

/// The process's socket. The runtime names it with its start time (`/proc/<pid>/stat` field
/// 22, the "disambiguation key"), so that socket is the process's own; a pid reused after a
/// restart leaves stale sockets beside it. Without an exact match, the newest socket is taken,
/// as the reference client does.
fn find_socket(dir: &Path, ns_pid: u32, start_key: Option<u64>) -> Option<PathBuf> {
    let prefix = format!("dotnet-diagnostic-{ns_pid}-");
    let candidates: Vec<(u64, i64, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let key = name.to_str()?.strip_prefix(&prefix)?.strip_suffix("-socket")?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((key.parse().ok()?, e.metadata().ok()?.mtime(), e.path()))
        })
        .collect();
    if let Some((_, _, exact)) = candidates.iter().find(|(key, _, _)| Some(*key) == start_key) {
        return Some(exact.clone());
    }
    candidates.into_iter().max_by_key(|(_, mtime, _)| *mtime).map(|(_, _, p)| p)
}

/// Field 22 of `/proc/<pid>/stat`, the start time in clock ticks since boot. The command name
/// (field 2) may hold spaces and parentheses: count from the last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn same_mount_ns(proc_root: &Path, pid: u32) -> bool {
    let ours = fs::metadata(proc_root.join("self/ns/mnt"));
    let theirs = fs::metadata(proc_root.join(pid.to_string()).join("ns/mnt"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_pid_is_the_innermost() {
        assert_eq!(parse_ns_pid("Name:\tdotnet\nNSpid:\t4711\t12\t1\n"), Some(1));
        assert_eq!(parse_ns_pid("NSpid:\t4711\n"), Some(4711));
        assert_eq!(parse_ns_pid("Name:\tx\n"), None);
    }

    #[test]
    fn tmpdir_defaults_to_tmp_and_ignores_empty() {
        assert_eq!(tmpdir_from_environ(b"A=1\0TMPDIR=/var/t\0B=2\0"), "/var/t");
        assert_eq!(tmpdir_from_environ(b"TMPDIR=\0"), "/tmp");
        assert_eq!(tmpdir_from_environ(b""), "/tmp");
    }

    #[test]
    fn runtime_dir_and_version_from_maps() {
        let maps = "7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n\
                    7f10-7f20 r-xp 0 08:01 2 /opt/dn/shared/Microsoft.NETCore.App/8.0.4/libcoreclr.so\n";
        let dir = runtime_dir_from_maps(maps).unwrap();
        assert_eq!(dir, "/opt/dn/shared/Microsoft.NETCore.App/8.0.4");
        assert_eq!(version_from_runtime_dir(&dir).as_deref(), Some("8.0.4"));
        assert_eq!(version_from_runtime_dir("/opt/app"), None);
        assert_eq!(runtime_dir_from_maps("7f00-7f01 r-xp 0 08:01 1 /x/libcoreclr.so.bak\n"), None);
    }

    #[test]
    fn the_process_own_socket_wins_then_the_newest_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("dotnet-diagnostic-12-100-socket");
        let new = dir.path().join("dotnet-diagnostic-12-200-socket");
        fs::write(&own, b"").unwrap();
        fs::write(dir.path().join("dotnet-diagnostic-12-x-socket"), b"").unwrap();
        fs::write(dir.path().join("dotnet-diagnostic-12--socket"), b"").unwrap();
        fs::write(dir.path().join("dotnet-diagnostic-123-300-socket"), b"").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(&new, b"").unwrap();
        assert_eq!(find_socket(dir.path(), 12, Some(100)), Some(own), "the key of the process's start time");
        assert_eq!(find_socket(dir.path(), 12, Some(7)), Some(new.clone()), "else the newest");
        assert_eq!(find_socket(dir.path(), 12, None), Some(new));
        assert_eq!(find_socket(dir.path(), 99, None), None);
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(start_time(stat), Some(123456));
        for junk in ["", ")", "1 (x)", "1 (x) S 1 2"] {
            assert_eq!(start_time(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn kernel_threads_are_not_dotnet_even_beside_a_stale_socket() {
        // pid 2 is kthreadd on Linux; a dead namespaced runtime may have left a socket for pid 2.
        let procfs = ProcFs::default();
        if let Ok(cmd) = fs::read(Path::new("/proc/2/cmdline")) {
            assert!(cmd.is_empty(), "pid 2 is a kernel thread here");
            assert!(procfs.process(2).is_err());
            assert!(procfs.dotnet_processes().iter().all(|p| !p.command_line.is_empty()));
        }
    }
}
