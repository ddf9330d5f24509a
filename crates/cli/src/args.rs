//! The command line: every subcommand, its arguments and the `--help` text that teaches it.
//! (Kept apart from `main.rs`, which only dispatches.)

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dumpwatch",
    version,
    about = "Find deadlocks and memory leaks in .NET processes, without an SDK",
    long_about = "Find deadlocks and memory leaks in .NET processes, without an SDK.\n\n\
        dumpwatch talks to the runtime's Diagnostics IPC socket directly, so it works on .NET Core 3.1\n\
        and .NET 5+ alike, and reaches processes in other PID and mount namespaces (another container\n\
        of the same pod) through /proc/<pid>/root. Run it as the app's user or as root.",
    after_help = "Typical session:\n  \
        dumpwatch ps                       # which .NET processes are there?\n  \
        dumpwatch watch 4242               # wait for a deadlock (.NET 8+), print the cycle\n  \
        dumpwatch stacks 4242              # every thread's managed stack (clrstack -all)\n  \
        dumpwatch hangs 4242               # thread-pool starvation, threads blocked at one place\n  \
        dumpwatch trace 4242 --duration 30s   # high CPU: which methods burn it (+ .nettrace, speedscope)\n  \
        dumpwatch gcdump 4242 --paths 5    # what is on the heap, and who holds it (dumpheap -stat, gcroot)\n  \
        dumpwatch dump 4242 -o core.4242   # core dump + matching DAC for later analysis\n  \
        dumpwatch analyze core.4242        # deadlocks, hangs, heap histogram and leak suspects from the dump\n  \
        dumpwatch analyze core.4242 roots 0x7f3a1c0a2b40   # then drill down: threads, syncblk, heap-stat, heap-type, obj, roots, ...\n  \
        dumpwatch diff a.nettrace b.nettrace  # what grew between two heap snapshots, and what holds it"
)]
pub(crate) struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "DUMPWATCH_LOG")]
    pub(crate) log: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once per run; boxing fields would only obscure clap's derive")]
pub(crate) enum Command {
    /// List every .NET process this user can reach, including other PID namespaces.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show System.Runtime counters (GC heap, CPU, thread pool, contention...).
    Counters {
        /// Process id (as `ps` shows it).
        pid: u32,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Keep printing every interval until Ctrl-C instead of printing one sample.
        #[arg(long)]
        watch: bool,
        /// Stop after this many seconds (with --watch).
        #[arg(long)]
        duration: Option<f64>,
        /// JSON (one object per sample set, one per line with --watch).
        #[arg(long)]
        json: bool,
    },
    /// Record a CPU trace (like `dotnet-trace collect --profile cpu-sampling`) and name the
    /// methods that burned the CPU.
    ///
    /// The runtime samples every managed thread each millisecond for --duration; samples of
    /// threads running managed code count (waiting threads do not). Writes the raw trace
    /// (`<output>.nettrace`, for PerfView or dotnet-trace) and a speedscope profile
    /// (`<output>.speedscope.json`, open it at https://www.speedscope.app), then prints the top
    /// methods by inclusive samples. Costs the app the sampler's overhead while it runs.
    Trace {
        pid: u32,
        /// How long to sample (e.g. 30s, 2m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Where to write: `<output>.nettrace` and `<output>.speedscope.json` (default trace-<pid>).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// How many methods to print.
        #[arg(long, default_value_t = 15)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Watch the exceptions a process throws and print the last ones with their stacks.
    ///
    /// Reads the runtime's own exception events (ExceptionThrown: .NET Core 3.1 and later) for
    /// --duration. First chance: an exception the app catches counts too. A rundown at the end
    /// names the frames. Costs the app one event and one stack walk per exception meanwhile.
    Exceptions {
        pid: u32,
        /// How long to watch (e.g. 30s, 2m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Only types matching this: `*` any run of characters, `?` one (e.g. 'System.*Timeout*').
        #[arg(long = "type", default_value = "*")]
        type_pattern: String,
        /// How many of the latest matching exceptions to print.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Frames printed per stack (--json prints all).
        #[arg(long, default_value_t = 8)]
        frames: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print the managed stack of every thread (like `clrstack -all`), symbolized.
    Stacks {
        pid: u32,
        #[arg(long)]
        json: bool,
    },
    /// Take a heap snapshot and print the per-type histogram (like `dumpheap -stat`).
    ///
    /// The runtime runs a full blocking GC for the snapshot: the app pauses for that GC.
    Gcdump {
        pid: u32,
        /// Also save the raw snapshot stream (nettrace) to this file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// How many types to show.
        #[arg(long, default_value_t = 25)]
        top: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Also keep the object graph and show the N types that retain the most memory, each
        /// with the path from its GC root (like `gcroot`): who holds the leak. Costs about
        /// 30 bytes of memory per object.
        #[arg(long, default_value_t = 0, value_name = "N")]
        paths: usize,
        #[arg(long)]
        json: bool,
    },
    /// Write a core dump through the runtime, with the matching DAC next to it.
    ///
    /// The dump is written to a hidden temporary name and renamed when complete, so a failed
    /// dump leaves no half file. A dump that would not fit on the disk is refused up front.
    Dump {
        pid: u32,
        /// Where to write the dump (default: ./core.<pid>).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// mini (stacks only), heap (what `analyze` needs), triage, full.
        #[arg(long = "type", default_value = "heap", value_parser = parse_dump_type)]
        dump_type: diag::protocol::DumpType,
        /// Free space (MiB) to leave on the destination besides the dump.
        #[arg(long, default_value_t = 256)]
        min_free_mib: u64,
        #[arg(long)]
        json: bool,
    },
    /// Watch lock contention live and report each deadlock as soon as it forms (.NET 8+).
    Watch {
        pid: u32,
        /// How long a wait-for cycle must stay unchanged before it is called a deadlock.
        #[arg(long, default_value_t = 500)]
        confirm_ms: u64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Exit after the first deadlock has been reported.
        #[arg(long)]
        once: bool,
        /// One JSON object per finding, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Analyze a core dump: deadlocks (with both stacks), hangs, heap histogram, leak suspects,
    /// finalizer backlog; or a saved heap snapshot (`*.nettrace`, from `gcdump -o`): histogram,
    /// leak suspects and finalizer backlog.
    ///
    /// Leak suspects are grouped by holder (one type under two holders is two suspects) and
    /// named by pattern: event handlers never removed (the static event is named), timers never
    /// disposed (what their callbacks keep), closures stored for good, or a big collection; each
    /// with how sure it is and why, in words. Hangs are thread-pool starvation (pool threads
    /// blocked on tasks while work waits in the queue) and 5+ threads blocked at one place.
    /// Thresholds: docs/findings-schema.md.
    ///
    /// Uses the runtime's own DAC (libmscordaccore.so) in a sandboxed child process, and only a
    /// DAC from a trusted source: --dac, else the DAC store (--dac-store, by the dumped
    /// libcoreclr.so's build-id), else the runtime installed here when its libcoreclr.so has the
    /// dumped build-id, else one downloaded from a symbol server by that build-id (cached in
    /// --dac-cache). A DAC that travelled with the capture (beside the dump, or among
    /// --artifacts) is native code chosen by the dumped app: it is ignored with a warning unless
    /// --trust-dac-beside-dump. The DAC must carry the dumped runtime's version string.
    /// Leak suspects need retention (the default); --histogram-only is faster and lighter.
    ///
    /// Stored artifacts work too: a presigned https:// URL or a file:// path, `.zst` compressed,
    /// checked against --sha256 (the SHA-256 of the stored bytes), fetched into a temporary
    /// directory that is removed afterwards. --report-to sends the findings to the operator.
    Analyze {
        /// The core dump (a heap or full dump: mini dumps have no heap): a path, file:// or
        /// https:// URL, optionally `.zst`. Not needed with --artifacts.
        #[arg(required_unless_present = "artifacts")]
        core: Option<String>,
        /// Drill down instead of the report (a local dump): threads (every stack, grouped),
        /// syncblk, heap-stat [N], heap-type <type> [N], obj <addr>, roots <addr> (every root
        /// and its chain), finalizer-queue, threadpool. With --json, as JSON.
        #[arg(value_enum, requires = "core")]
        view: Option<crate::views::View>,
        /// The view's arguments (a type name, an address, a count).
        #[arg(requires = "view")]
        view_args: Vec<String>,
        /// SHA-256 (hex) of the dump's stored bytes; a mismatch stops before any analysis.
        #[arg(long)]
        sha256: Option<String>,
        /// The DAC to use (must match the dumped runtime build): a path or URL, like the dump.
        #[arg(long)]
        dac: Option<String>,
        /// SHA-256 (hex) of the DAC's stored bytes.
        #[arg(long, requires = "dac")]
        dac_sha256: Option<String>,
        /// The snapshot's artifacts as JSON, `[{kind, uri, size, sha256}]` with fetchable URIs:
        /// the dump (`core*`) and its DAC (`libmscordaccore*`) are taken from the list.
        #[arg(long, conflicts_with_all = ["core", "sha256", "dac"])]
        artifacts: Option<String>,
        /// Send `{snapshot, findings}` to this operator (`POST <url>/v1/jobs/findings`).
        #[arg(long, requires_all = ["snapshot", "token_file"], value_name = "URL")]
        report_to: Option<String>,
        /// The DumpSnapshot the findings belong to.
        #[arg(long, env = "DUMPWATCH_SNAPSHOT")]
        snapshot: Option<String>,
        /// Bearer token for --report-to (a projected ServiceAccount token).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// CA of the operator (PEM file); default: the PEM text in DUMPWATCH_OPERATOR_CA, else
        /// the public roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// How many heap types to show.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Only the histogram, threads and locks: no object graph, no leak suspects.
        #[arg(long)]
        histogram_only: bool,
        /// Print where the time went to stderr: wall and CPU seconds per phase (the DAC worker's
        /// threads, roots and heap walk, building the object graph, dominators, leak suspects,
        /// the report). CPU counts every thread of the process that ran the phase.
        #[arg(long)]
        timings: bool,
        /// Symbol server to fetch a missing DAC from (repeatable, tried in order). Default: the
        /// comma-separated DUMPWATCH_SYMBOL_SERVER if set (empty: none), else Microsoft's
        /// (https://msdl.microsoft.com/download/symbols).
        #[arg(long, value_name = "URL")]
        symbol_server: Vec<String>,
        /// Never download a DAC: use only --dac, the dump's folder, the cache and local runtimes.
        #[arg(long, conflicts_with = "symbol_server")]
        no_symbol_server: bool,
        /// Where downloaded DACs are kept, by symbol-server key (default:
        /// $XDG_CACHE_HOME/dumpwatch/dac, else <temp dir>/dumpwatch-dac).
        #[arg(long, env = "DUMPWATCH_DAC_CACHE", value_name = "DIR")]
        dac_cache: Option<PathBuf>,
        /// Do not take the DAC from the dumped process' runtime folder or from runtimes
        /// installed here: only --dac, the DAC store, the cache and symbol servers. For analysis
        /// that does not depend on this machine's runtimes (the analysis Job passes it by default).
        #[arg(long)]
        no_local_runtime: bool,
        /// The dump was written by the runtime as the process crashed (a `crash` capture): name
        /// the unhandled exception and the thread that threw it. Implied when the runtime's crash
        /// report is found (`--crash-report`, `<dump>.crashreport.json` or `crashreport.json`
        /// beside the dump, or `crashreport.json*` among --artifacts; .NET 6+ writes one).
        #[arg(long)]
        crashed: bool,
        /// The runtime's crash report (`DOTNET_EnableCrashReport=1`) for this dump: a path or URL.
        #[arg(long, value_name = "FILE", conflicts_with = "artifacts")]
        crash_report: Option<String>,
        /// An admin DAC store: <DIR>/<libcoreclr build-id>/libmscordaccore.so, listed in
        /// <DIR>/<build-id>/SHA256SUMS (lay it out with `dumpwatch dac-store add`).
        #[arg(long, env = "DUMPWATCH_DAC_STORE", value_name = "DIR")]
        dac_store: Option<PathBuf>,
        /// Use a DAC that travelled with the capture (beside the dump, or among --artifacts).
        /// It was chosen by whoever could write the capture: this trusts the app pods.
        #[arg(long)]
        trust_dac_beside_dump: bool,
        /// Run the DAC worker without its sandbox (landlock, seccomp, rlimits, empty
        /// environment). For debugging and for measuring the sandbox's cost only: the findings
        /// then carry a warning.
        #[arg(long)]
        no_sandbox: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Print the findings document (schema: docs/findings-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Find hangs that are not deadlocks in a running process: thread-pool starvation and
    /// crowds of threads blocked at one place.
    ///
    /// Samples every thread's managed stack (like `stacks`) and reads the thread pool's queue
    /// length from the runtime's counters, then groups the threads blocked in a wait API
    /// (Task.Wait/.Result/GetAwaiter().GetResult(), SemaphoreSlim, ManualResetEventSlim,
    /// Thread.Join, Monitor.Wait, wait handles) by identical stack. Pool threads blocked on
    /// tasks while work waits in the pool's queue are starvation (sync over async); 5 or more
    /// threads with one stack are a blocked group. Threads waiting for a `lock` are `watch`'s
    /// business. The same analysis runs on dumps in `analyze`. Works on .NET Core 3.1 and 8.
    #[command(after_help = "Example:\n  dumpwatch hangs 4242\n  \
        THREAD-POOL STARVATION: 8 thread-pool threads wait in `OrderService.Get` → `Task.Result` (sync over async; …)")]
    Hangs {
        pid: u32,
        /// `{pid, threads, queued_work_items, hangs}`; `hangs` as in the findings document.
        #[arg(long)]
        json: bool,
    },
    /// Compare heap snapshots: what grew, by how much, and which path holds the new objects.
    ///
    /// Takes saved heap snapshots (`*.nettrace`, from `dumpwatch gcdump -o`) and core dumps
    /// (from `dumpwatch dump`), in any mix, oldest first. Prints per type the change in objects
    /// and bytes between the first and the last; for the growing types, the retention path
    /// (root and chain of types) that gained the most instances: that is what holds the new
    /// objects. Counts are exact; a core dump also counts garbage not yet collected, a gcdump
    /// runs a full GC first, so compare like with like where garbage matters.
    ///
    /// With K+1 snapshots or more (K = --intervals), also gives the growth verdict: a type
    /// whose count rose in each of the last K intervals, by at least 1,000 objects and 1 MiB
    /// (with the rising objects it holds), while at most 4 other types did so too, is a suspected leak, with its growth per hour
    /// (from the files' modification times) and its holder. A bounded cache at steady state, a
    /// table loaded at start-up and request churn do not rise in every interval.
    #[command(after_help = "Examples:\n  \
        dumpwatch gcdump 4242 -o before.nettrace; sleep 600; dumpwatch gcdump 4242 -o after.nettrace\n  \
        dumpwatch diff before.nettrace after.nettrace\n  \
        dumpwatch diff core.4242 after.nettrace --json      # a dump and a gcdump compare too\n  \
        dumpwatch diff h1.nettrace h2.nettrace h3.nettrace h4.nettrace   # + growth verdict over 3 intervals")]
    Diff {
        /// The snapshots, oldest first (at least two): `*.nettrace` heap snapshots or core dumps.
        #[arg(required = true, num_args = 2.., value_name = "SNAPSHOT")]
        snapshots: Vec<PathBuf>,
        /// How many growing types to show (with their paths).
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// K: intervals in a row a type must grow in for the growth verdict.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
        intervals: u64,
        /// Never download a DAC for a core dump (see `analyze --help` for where it is looked for).
        #[arg(long)]
        no_symbol_server: bool,
        /// Give up reading one core dump after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Print the diff document (`dumpwatch.heap_diff`, version 1) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage an admin DAC store (the trusted DACs analysis may load; docs/security.md).
    #[command(subcommand)]
    DacStore(DacStoreCommand),
    /// Delete stored `file://` artifacts, but only those under --under.
    ///
    /// What the operator's cleanup Job runs when a DumpSnapshot stored on a PersistentVolumeClaim
    /// is deleted: the claim is mounted read-write, so every path is checked first. A URI is
    /// deleted only if its path is absolute, has no `.` or `..`, lies under DIR, and its directory
    /// still lies under DIR once symlinks are resolved (a symlinked file is removed itself, never
    /// followed). A file that is already gone counts as deleted. Capture directories left empty
    /// are removed, up to DIR (DIR itself stays). All URIs are tried; the exit code is 1 if any
    /// was refused or could not be deleted.
    #[command(after_help = "Example (what the cleanup Job of snapshot orders-7c9-c1 runs):\n  \
        dumpwatch delete-artifacts --under /dumpwatch/shop/orders-7c9 \\\n    \
        file:///dumpwatch/shop/orders-7c9/c1/core.42.zst file:///dumpwatch/shop/orders-7c9/c1/libmscordaccore.so.zst")]
    DeleteArtifacts {
        /// The directory every artifact must be under (the snapshot's `<path>/<namespace>/<pod>`).
        #[arg(long, value_name = "DIR")]
        under: PathBuf,
        /// The artifacts' `file:///...` URIs.
        #[arg(required = true, value_name = "URI")]
        uris: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum DacStoreCommand {
    /// Add a runtime's DAC to a store: <STORE>/<build-id of libcoreclr.so>/libmscordaccore.so
    /// and its SHA256SUMS, for `analyze --dac-store` and the chart's analysis.dacStore.
    #[command(after_help = "Example (one entry per runtime build your apps use):\n  \
        dumpwatch dac-store add --store /srv/dac-store /usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.4/libmscordaccore.so")]
    Add {
        /// The store directory (created if missing).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The DAC (libmscordaccore.so) of an installed runtime you trust.
        dac: PathBuf,
        /// That runtime's libcoreclr.so (default: the one beside the DAC); its build-id names
        /// the entry.
        #[arg(long, value_name = "FILE")]
        runtime: Option<PathBuf>,
    },
}

pub(crate) fn parse_dump_type(s: &str) -> Result<diag::protocol::DumpType, String> {
    diag::protocol::DumpType::parse(s).ok_or_else(|| format!("unknown dump type {s:?}: use mini, heap, triage or full"))
}

/// `30s`, `2m`, `1h` (the DumpPolicy's duration syntax).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    api::Duration::parse(s).map(|d| std::time::Duration::from_secs_f64(d.as_secs_f64())).map_err(|e| e.to_string())
}
