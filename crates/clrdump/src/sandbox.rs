//! The DAC worker's confinement (docs/security.md, "The analysis sandbox").
//!
//! The worker loads native code (the DAC) and feeds it an untrusted dump, so it is treated as
//! compromised from the first `dlopen`: everything here is installed before it, in this order,
//! while the process is still single-threaded (landlock and seccomp bind the calling thread and
//! the threads it creates later):
//! 1. rlimits: address space, CPU seconds, open files, no core files;
//! 2. `no_new_privs` (also what lets an unprivileged process install the filters below);
//! 3. landlock: read-only access to the dump, the DAC, the module files the dump maps (runtime
//!    and assemblies, by name) and the system libraries the DAC links against; nothing may be
//!    written, created or executed elsewhere, no TCP, no abstract unix sockets, no signals out;
//! 4. seccomp: `socket`, `connect`, `execve`, `ptrace`, `process_vm_*`, io_uring (which would
//!    bypass the filter), namespaces, mounts, module loading and a few more fail with EPERM.
//!
//! The parent starts the worker with an empty environment. What got enforced is reported to the
//! parent first ([`Confinement`]), and the parent turns every missing layer into a warning.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How far one layer got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Layer {
    /// Fully in force.
    Enforced(String),
    /// Only part of it (an older kernel's landlock ABI, …).
    Partial(String),
    /// Not available or failed: the reason.
    Missing(String),
    /// Switched off on purpose (`--no-sandbox`).
    Off,
}

/// What the worker could enforce on itself, sent to the parent before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    pub rlimits: Layer,
    pub no_new_privs: Layer,
    pub landlock: Layer,
    pub seccomp: Layer,
}

impl Confinement {
    /// Nothing enforced: `--no-sandbox`.
    pub fn off() -> Self {
        Confinement { rlimits: Layer::Off, no_new_privs: Layer::Off, landlock: Layer::Off, seccomp: Layer::Off }
    }

    fn layers(&self) -> [(&'static str, &Layer); 4] {
        [
            ("rlimits", &self.rlimits),
            ("no_new_privs", &self.no_new_privs),
            ("landlock", &self.landlock),
            ("seccomp", &self.seccomp),
        ]
    }

    /// One line for the log: `landlock: enforced (ABI 7), seccomp: …`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .layers()
            .iter()
            .map(|(name, l)| match l {
                Layer::Enforced(d) => format!("{name}: enforced ({d})"),
                Layer::Partial(d) => format!("{name}: partial ({d})"),
                Layer::Missing(d) => format!("{name}: MISSING ({d})"),
                Layer::Off => format!("{name}: off"),
            })
            .collect();
        parts.join(", ")
    }

    /// A warning per layer not fully in force, for the findings and the log.
    pub fn warnings(&self) -> Vec<String> {
        if self.layers().iter().all(|(_, l)| **l == Layer::Off) {
            return vec![
                "the DAC worker ran without its sandbox (--no-sandbox): a hostile DAC or dump had this user's rights"
                    .into(),
            ];
        }
        self.layers()
            .iter()
            .filter_map(|(name, l)| match l {
                Layer::Enforced(_) => None,
                Layer::Partial(d) => Some(format!("the DAC worker's {name} sandbox layer is only partial: {d}")),
                Layer::Missing(d) => Some(format!("the DAC worker ran without {name}: {d}")),
                Layer::Off => Some(format!("the DAC worker's {name} layer was switched off")),
            })
            .collect()
    }
}

/// Limits for the worker, chosen by the parent.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Address space, bytes (the dump is mapped whole, so it counts).
    pub address_space: u64,
    /// CPU seconds (all threads).
    pub cpu_seconds: u64,
}

impl Limits {
    /// The dump's size plus 8 GiB of room (the DAC's caches, the snapshot, thread stacks and
    /// glibc's per-thread arenas, which reserve address space they never touch), and the
    /// worker's timeout in CPU seconds (its threads together).
    pub fn for_dump(dump_bytes: u64, timeout_secs: u64) -> Self {
        Limits { address_space: dump_bytes.saturating_add(8 << 30), cpu_seconds: timeout_secs.max(1) }
    }

    /// `<address space>:<cpu seconds>`, the worker's argument.
    pub fn to_arg(self) -> String {
        format!("{}:{}", self.address_space, self.cpu_seconds)
    }

    /// The inverse of [`Limits::to_arg`].
    pub fn from_arg(s: &str) -> Option<Self> {
        let (a, c) = s.split_once(':')?;
        Some(Limits { address_space: a.parse().ok()?, cpu_seconds: c.parse().ok()? })
    }
}

/// Directories of the system libraries the DAC links against (libstdc++, libgcc_s, libm, libc)
/// and the loader's cache: read-only. They hold no secrets.
const SYSTEM_LIBS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache"];
/// What the DAC's PAL reads about the machine and itself: read-only. `/proc/self` is resolved
/// when the rule is made, so it is this process' own directory only.
const MACHINE_INFO: &[&str] =
    &["/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu"];
/// Written by nothing, but the PAL opens it read-write at start.
const DEV_NULL: &str = "/dev/null";

/// Whether the worker may open a file the dump says the process mapped: the runtime's shared
/// objects and the assemblies, by name. Anything else (a hostile dump can list any path as a
/// mapped file, say the analyzer's projected token) is never opened.
pub fn is_module_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let secret_dir =
        ["/var/run/secrets/", "/run/secrets/", "/proc/", "/sys/", "/dev/"].iter().any(|d| path.starts_with(d));
    let module = name.ends_with(".so")
        || name.contains(".so.")
        || name.ends_with(".dll")
        || name.ends_with(".exe")
        || name.ends_with(".ni.dll")
        || name == "createdump";
    path.starts_with('/') && !path.contains("/../") && !secret_dir && module
}

/// Confines the calling process (see the module's doc). `read_only` are the files it needs
/// besides the system libraries: the dump, the DAC, the module files.
pub fn confine(read_only: &[PathBuf], limits: Limits, open_files: u64) -> Confinement {
    Confinement {
        rlimits: set_rlimits(limits, open_files),
        no_new_privs: no_new_privs(),
        landlock: landlock(read_only),
        seccomp: seccomp(),
    }
}

#[allow(unsafe_code)]
fn set_rlimits(limits: Limits, open_files: u64) -> Layer {
    let set = |resource, value: u64| -> Result<(), String> {
        let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit with a valid pointer to a filled struct.
        if unsafe { libc::setrlimit(resource, &lim) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    };
    let all = [
        ("address space", libc::RLIMIT_AS, limits.address_space),
        // The soft limit sends SIGXCPU, the hard one (a second later) SIGKILL.
        ("CPU", libc::RLIMIT_CPU, limits.cpu_seconds),
        ("open files", libc::RLIMIT_NOFILE, open_files),
        ("core files", libc::RLIMIT_CORE, 0),
    ];
    let failed: Vec<String> =
        all.iter().filter_map(|(name, r, v)| set(*r, *v).err().map(|e| format!("{name}: {e}"))).collect();
    if failed.is_empty() {
        Layer::Enforced(format!(
            "address space {} MiB, CPU {} s, {open_files} open files, no core files",
            limits.address_space >> 20,
            limits.cpu_seconds
        ))
    } else {
        Layer::Partial(failed.join("; "))
    }
}

#[allow(unsafe_code)]
fn no_new_privs() -> Layer {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0 {
        Layer::Enforced("set".into())
    } else {
        Layer::Missing(std::io::Error::last_os_error().to_string())
    }
}

fn landlock(read_only: &[PathBuf]) -> Layer {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let mut paths: Vec<&Path> = read_only.iter().map(PathBuf::as_path).collect();
    paths.extend(SYSTEM_LIBS.iter().chain(MACHINE_INFO).map(Path::new));
    paths.retain(|p| p.exists());
    let result = (|| -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        landlock::Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
            .scope(Scope::AbstractUnixSocket | Scope::Signal)?
            .create()?
            .add_rules(path_beneath_rules(paths, AccessFs::from_read(abi)))?
            // /dev/null: read and write (truncating is a write to nothing).
            .add_rules(path_beneath_rules([DEV_NULL], AccessFs::ReadFile | AccessFs::WriteFile))?
            .restrict_self()
    })();
    let kernel = kernel_abi();
    match result {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => Layer::Enforced(format!("ABI {kernel}")),
            RulesetStatus::PartiallyEnforced => Layer::Partial(format!(
                "landlock ABI {kernel} on this kernel: files are confined, but not all of TCP, abstract sockets and signals"
            )),
            RulesetStatus::NotEnforced => Layer::Missing("landlock unavailable on this kernel".into()),
        },
        Err(e) => Layer::Missing(format!("landlock failed: {e}")),
    }
}

/// The kernel's landlock ABI version (0: none), asked with the syscall itself.
#[allow(unsafe_code)]
pub fn kernel_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// The system calls the worker never needs: networking, running programs, reaching into other
/// processes, io_uring (its operations would bypass this filter), changing namespaces, mounts,
/// the kernel's keyring, BPF, perf, modules.
const DENIED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_userfaultfd,
];

fn seccomp() -> Layer {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let Ok(arch) = TargetArch::try_from(std::env::consts::ARCH) else {
        return Layer::Missing(format!("no seccomp filter for {}", std::env::consts::ARCH));
    };
    let rules = DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = match SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch) {
        Ok(f) => f,
        Err(e) => return Layer::Missing(format!("seccomp filter: {e}")),
    };
    let program: BpfProgram = match filter.try_into() {
        Ok(p) => p,
        Err(e) => return Layer::Missing(format!("seccomp filter: {e}")),
    };
    match seccompiler::apply_filter_all_threads(&program) {
        Ok(()) => Layer::Enforced(format!("{} system calls refused with EPERM", DENIED.len())),
        Err(e) => Layer::Missing(format!("seccomp unavailable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runtime_modules_and_assemblies_may_be_opened() {
        for ok in [
            "/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.4/libcoreclr.so",
            "/app/Orders.dll",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            assert!(is_module_file(ok), "{ok}");
        }
        for no in [
            "/var/run/secrets/dumpwatch.dev/token",
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.dll",
            "/etc/shadow",
            "/proc/1/environ",
            "relative.dll",
            "/app/../var/run/secrets/x.so",
            "/scratch/core.42",
        ] {
            assert!(!is_module_file(no), "{no}");
        }
    }

    #[test]
    fn missing_layers_become_warnings() {
        let c = Confinement {
            rlimits: Layer::Enforced("x".into()),
            no_new_privs: Layer::Enforced("set".into()),
            landlock: Layer::Missing("landlock unavailable on this kernel".into()),
            seccomp: Layer::Enforced("x".into()),
        };
        assert_eq!(c.warnings(), vec!["the DAC worker ran without landlock: landlock unavailable on this kernel"]);
        assert!(c.summary().contains("landlock: MISSING"), "{}", c.summary());
        assert_eq!(Confinement::off().warnings().len(), 1);
        assert!(Confinement::off().warnings()[0].contains("--no-sandbox"));
    }

    #[test]
    fn limits_round_trip_as_an_argument() {
        let l = Limits::for_dump(1 << 30, 600);
        let back = Limits::from_arg(&l.to_arg()).unwrap();
        assert_eq!((back.address_space, back.cpu_seconds), ((1 << 30) + (8 << 30), 600));
        assert!(Limits::from_arg("x:1").is_none());
    }
}
