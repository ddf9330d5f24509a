//! The machine-wide state a real node touches, taken and given back: one node at a time
//! (a lock), the bridge and its routes, a guard that keeps pod traffic on this host, the
//! cgroups, and everything kubelet, kube-proxy, containerd and the CNI plugins change outside
//! the node's own directory (sysctls, nft tables, a few fixed paths).
//!
//! What was there before is written to [`RECORD`] before anything changes, so a node whose test
//! was killed is cleaned up by the next one that starts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

use super::config::{BRIDGE, CGROUP_ROOT, NETWORK, NODE_IP, POD_CIDR, SERVICE_CIDR};
use crate::Result;
use crate::util::run;

/// Held while a node runs: the bridge, the cgroups and the fixed paths exist once per machine.
const LOCK: &str = "/run/dumpwatch-node.lock";
/// What to restore, written before the first change and removed after the last restore.
pub const RECORD: &str = "/run/dumpwatch-node.json";
/// The table that keeps forwarded pod traffic on the host (ours, removed on stop).
const GUARD_TABLE: &str = "dumpwatch-node-guard";

/// Sysctls the node's components write (kubelet: panic and overcommit policy; the bridge
/// plugin: forwarding; kube-proxy: conntrack and route_localnet where it uses them).
pub const SYSCTLS: &[&str] = &[
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv4.conf.all.src_valid_mark",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
];

/// Paths the components create whatever they are configured with; removed after a run unless
/// they existed before it.
pub const FIXED_PATHS: &[&str] =
    &["/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni", "/run/nri"];

/// The machine's state for one node, restored on drop.
pub struct Host {
    _lock: Flock<File>,
    record: Value,
}

impl Host {
    /// Waits (up to `wait`) for the machine's node lock, cleans up after a node that did not
    /// stop, records the state, then creates the bridge, routes, guard and cgroups.
    pub fn take(node_dir: &Path, wait: Duration) -> Result<Host> {
        let lock = lock(wait)?;
        if let Ok(text) = std::fs::read_to_string(RECORD) {
            eprintln!("real node: restoring what a node that did not stop left behind ({RECORD})");
            let old: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            restore(&old);
        }
        let record = json!({
            "dir": node_dir,
            "sysctls": SYSCTLS.iter().filter_map(|k| Some((k.to_string(), Value::from(sysctl_get(k)?)))).collect::<serde_json::Map<_, _>>(),
            "nft_tables": nft_tables(),
            "made": FIXED_PATHS.iter().filter(|p| !Path::new(p).exists()).collect::<Vec<_>>(),
        });
        std::fs::write(RECORD, serde_json::to_vec_pretty(&record)?)?;
        let host = Host { _lock: lock, record };
        network_up()?;
        cgroups_up()?;
        Ok(host)
    }

    /// The recorded value of each sysctl before the node started.
    pub fn sysctls_before(&self) -> &Value {
        &self.record["sysctls"]
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        restore(&self.record);
    }
}

fn lock(wait: Duration) -> Result<Flock<File>> {
    let file = File::options().create(true).truncate(false).write(true).open(LOCK)?;
    let deadline = Instant::now() + wait;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err((_, e)) => {
                return Err(format!("another real node holds {LOCK} (one per machine) after {wait:?}: {e}").into());
            }
        }
    }
}

fn network_up() -> Result<()> {
    // A leftover bridge of a killed run was removed by restore(); a fresh one now.
    run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE]))?;
    run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    // Service addresses go to the bridge too: a packet for a ClusterIP that kube-proxy has no
    // rule for (yet) dies here instead of following the default route off the machine.
    run(Command::new("ip").args(["route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP]))?;
    // ipMasq is off, and this drops whatever a pod sends that would be forwarded off the bridge:
    // pods reach each other, Services and the host, nothing else.
    let guard = format!(
        "table inet {GUARD_TABLE} {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    \
         ip saddr {POD_CIDR} oifname != \"{BRIDGE}\" drop\n  }}\n}}\n"
    );
    nft_script(&guard)?;
    Ok(())
}

fn nft_script(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft (Debian's nftables, installed by scripts/setup): {e}"))?;
    child.stdin.take().expect("stdin").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// The v1 hierarchies (`/sys/fs/cgroup/<controllers>`), where the kubelet's cgroup root must
/// exist before it starts.
fn hierarchies() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2] == "cgroup").then(|| PathBuf::from(f[1]))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn cgroups_up() -> Result<()> {
    for h in hierarchies() {
        let dir = h.join(CGROUP_ROOT.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // A new cpuset starts empty and takes no task until given CPUs and memory nodes.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                std::fs::write(dir.join(f), v.trim()).map_err(|e| format!("{}: {e}", dir.join(f).display()))?;
            }
        }
    }
    Ok(())
}

/// Every process in the node's cgroups (the containers and their sandboxes), killed until none
/// is left, then the cgroups removed deepest first.
fn cgroups_down() {
    let roots: Vec<PathBuf> =
        hierarchies().into_iter().map(|h| h.join(CGROUP_ROOT.trim_start_matches('/'))).filter(|d| d.exists()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut found = 0;
        for r in &roots {
            for dir in walk_dirs(r) {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        found += 1;
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        if found == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &roots {
        let mut dirs = walk_dirs(r);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..20 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            out.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        i += 1;
    }
    out
}

/// Processes whose command line names the node's directory: containerd's shims (they leave
/// containerd's process group, and are found by the socket path under `dir`), anything else
/// started from there.
fn kill_processes_under(dir: &Path) {
    let needle = dir.display().to_string();
    if needle.len() < 8 {
        return; // never match broadly
    }
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Mount points under `prefix`, deepest first, lazily unmounted (overlay roots, shm, netns
/// bind mounts, the kubelet's tmpfs volumes).
fn unmount_under(prefix: &str) {
    for _ in 0..3 {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Puts the machine back as `record` found it; safe to run twice and on a partial start.
pub(crate) fn restore(record: &Value) {
    let dir = record["dir"].as_str().map(PathBuf::from);
    cgroups_down();
    if let Some(dir) = &dir {
        kill_processes_under(dir);
        unmount_under(&dir.display().to_string());
    }
    // kubelet's pod log links (pointing into the node's directory).
    for e in std::fs::read_dir("/var/log/containers").into_iter().flatten().flatten() {
        let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
        if dir.as_ref().is_some_and(|d| target.starts_with(&d.display().to_string())) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    // CNI's result cache: `<network>-<sandbox>-<if>` for our network, and containerd's own
    // loopback results of the same sandboxes.
    let results = Path::new("/var/lib/cni/results");
    let names: Vec<String> = std::fs::read_dir(results)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let sandboxes: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("{NETWORK}-")))
        .filter_map(|rest| rest.split('-').next())
        .collect();
    for n in &names {
        if n.starts_with(&format!("{NETWORK}-")) || sandboxes.iter().any(|id| n.contains(id)) {
            let _ = std::fs::remove_file(results.join(n));
        }
    }
    for path in record["made"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        unmount_under(path);
        let _ = std::fs::remove_dir_all(path);
    }
    let before: Vec<String> =
        record["nft_tables"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
    for table in nft_tables().into_iter().filter(|t| !before.contains(t)) {
        let _ = Command::new("nft").arg("delete").args(table.split(' ')).output();
    }
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    for (key, value) in record["sysctls"].as_object().into_iter().flatten() {
        if let Some(v) = value.as_str()
            && sysctl_get(key).as_deref() != Some(v)
        {
            let _ = std::fs::write(sysctl_path(key), v);
        }
    }
    let _ = std::fs::remove_file(RECORD);
}

/// `table <family> <name>` of every nft table now.
pub fn nft_tables() -> Vec<String> {
    let out = Command::new("nft").args(["list", "tables"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().filter_map(|l| l.strip_prefix("table ")).map(|t| format!("table {t}")).collect()
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

pub fn sysctl_get(key: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(key)).ok().map(|v| v.trim().to_string())
}
