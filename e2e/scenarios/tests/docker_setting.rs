//! The Docker setting: no Kubernetes, the standalone sidecar container beside an app container,
//! joining its PID namespace as `docker run --pid=container:app` does (`docs/docker.md`, and
//! `sidecar/examples/compose.yaml`'s `pid: "service:app"`). Both run from the images
//! `scripts/images` builds, on the real node's containerd through `ctr` (nerdctl cannot be
//! built from the Go module proxy, see docs/docker.md), as user 1000, with the policy file
//! mounted. The sidecar finds the .NET 8 app through the shared `/proc`, sees the deadlock the
//! app reports as its ground truth, and captures stacks into the shared volume.

use std::time::Duration;

use harness::node::config::CGROUP_ROOT;
use harness::{ControlPlane, Options, Value, free_port, wait_for};
use scenarios::{APP_NET8, SIDECAR_IMAGE};

const S: Duration = Duration::from_secs(1);

#[test]
fn the_standalone_sidecar_watches_an_app_container_whose_pid_namespace_it_joins() {
    testbed::require_setup();
    let images = tempfile::tempdir().unwrap();
    let tarballs = scenarios::build_images(images.path()).unwrap();
    let cp = ControlPlane::start_with(Options { real_node: true, node_images: tarballs, ..Options::default() })
        .expect("a real node");
    let node = cp.node().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("dumpwatch");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "mode: connect\ncounterInterval: 1s\ntriggers: [{type: deadlock, capture: [stacks]}]\n\
         storage: {volume: {path: /dumpwatch}}\n",
    )
    .unwrap();
    let (app_port, sidecar_port) = (free_port(), free_port());
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let bind = |src: &std::path::Path, dst: &str, mode: &str| {
        format!("type=bind,src={},dst={dst},options=rbind:{mode}", src.display())
    };
    // The names docker would use: docker.io/... for the workload, the chart's for the sidecar.
    let app_image = format!("docker.io/{APP_NET8}");
    let sidecar_image = format!("{SIDECAR_IMAGE}:0.1.0");
    let cgroup = |id: &str| format!("{CGROUP_ROOT}/docker-setting/{id}");

    // docker run -d --name app --user 1000 --network host -v dumps:/dumpwatch <app> --port N
    let app_log = format!("file://{}", log("app").display());
    let app_cgroup = cgroup("app");
    let app_volume = bind(&volume, "/dumpwatch", "rw");
    let app_args = [
        "run",
        "-d",
        "--user",
        "1000:1000",
        "--net-host",
        "--cgroup",
        &app_cgroup,
        "--log-uri",
        &app_log,
        "--env",
        "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1",
        "--mount",
        &app_volume,
        &app_image,
        "dw-app",
        "/usr/share/dotnet/dotnet",
        "/app/DiagScenarios.dll",
        "--port",
        &app_port.to_string(),
    ];
    node.ctr(&app_args).unwrap();
    let app_pid = wait_for("the app's task", 30 * S, || {
        let tasks = node.ctr(&["tasks", "ls"])?;
        Ok(tasks
            .lines()
            .find(|l| l.starts_with("dw-app "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok()))
    })
    .unwrap();
    wait_for("the app to answer", 60 * S, || {
        Ok(testbed::http_get(app_port, "/health", 5 * S).ok().filter(|r| r.0 == 200))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(log("app")).unwrap_or_default()));

    // docker run -d --pid=container:app --user 1000 -v dumps:/dumpwatch -v ./policy.yaml:... sidecar
    let side_log = format!("file://{}", log("sidecar").display());
    let side_cgroup = cgroup("sidecar");
    let pid_ns = format!("pid:/proc/{app_pid}/ns/pid");
    let side_volume = bind(&volume, "/dumpwatch", "rw");
    let side_policy = bind(&policy, "/etc/dumpwatch/policy.yaml", "ro");
    let http = format!("127.0.0.1:{sidecar_port}");
    let side_args = [
        "run",
        "-d",
        "--user",
        "1000:1000",
        "--net-host",
        "--with-ns",
        &pid_ns,
        "--cgroup",
        &side_cgroup,
        "--log-uri",
        &side_log,
        "--mount",
        &side_volume,
        "--mount",
        &side_policy,
        &sidecar_image,
        "dw-sidecar",
        "/usr/local/bin/dumpwatch-sidecar",
        "--policy",
        "/etc/dumpwatch/policy.yaml",
        "--storage",
        "/dumpwatch",
        "--http",
        &http,
    ];
    node.ctr(&side_args).unwrap();
    let sidecar_log = || std::fs::read_to_string(log("sidecar")).unwrap_or_default();
    let metrics = wait_for("the sidecar to watch the app", 60 * S, || {
        let m = testbed::http_get(sidecar_port, "/metrics", 5 * S).ok().map(|r| r.1).unwrap_or_default();
        Ok(m.lines().any(|l| l.starts_with("dotnet_gc_heap_size_bytes{") && l.contains("DiagScenarios")).then_some(m))
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", sidecar_log()));
    assert!(metrics.contains("dumpwatch_watched_processes 1"), "{metrics}");

    // The deadlock the app reports is the one the sidecar finds.
    let (_, truth) = testbed::http_get(app_port, "/deadlock?waiters=1", 30 * S).unwrap();
    let truth: Value = serde_json::from_str(&truth).unwrap();
    let mut owners: Vec<u64> =
        truth["owners"].as_array().unwrap().iter().filter_map(|o| o["os_tid"].as_u64()).collect();
    owners.sort();
    let finding = wait_for("the deadlock in /findings", 30 * S, || {
        let (_, body) = testbed::http_get(sidecar_port, "/findings", 5 * S)?;
        let list: Value = serde_json::from_str(&body)?;
        Ok(list.as_array().and_then(|l| l.first()).cloned())
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", sidecar_log()));
    let text = finding.to_string();
    for tid in &owners {
        assert!(text.contains(&tid.to_string()), "owner thread {tid} in {finding:#}");
    }
    // Stacks captured into the shared volume, by the app's user.
    let captured = wait_for("the stacks on the volume", 30 * S, || {
        let found =
            walk(&volume).into_iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("stacks")));
        Ok(found)
    })
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", sidecar_log()));
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&captured).unwrap());
    assert_eq!(owner, 1000, "{}", captured.display());
    for id in ["dw-sidecar", "dw-app"] {
        let _ = node.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
