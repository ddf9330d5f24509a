use api::{DumpPolicy, DumpPolicySpec};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn policy(yaml: &str) -> DumpPolicy {
    let mut p = DumpPolicy::new("orders", DumpPolicySpec::from_yaml(yaml).unwrap());
    p.metadata.namespace = Some("shop".into());
    p
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

/// A pod with two containers, env and volumes on the first only, no annotations.
fn orders_pod() -> Pod {
    pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-7c9", "namespace": "shop", "labels": {"app": "orders"}},
        "spec": {
            "containers": [
                {"name": "api", "image": "orders:1", "env": [{"name": "ASPNETCORE_URLS", "value": "http://+:8080"}],
                 "volumeMounts": [{"name": "config", "mountPath": "/config"}]},
                {"name": "worker", "image": "orders-worker:1"}
            ],
            "volumes": [{"name": "config", "configMap": {"name": "orders"}}]
        }
    }))
}

/// Applies the patch the way the API server does, and reads the result back as a typed Pod.
fn apply(pod: &Pod, patch: &json_patch::Patch) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, &patch.0).expect("the patch applies to the pod");
    serde_json::from_value(doc).expect("the patched pod is still a Pod")
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name}"))
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.as_deref())
}

const LISTEN: &str = "selector: {matchLabels: {app: orders}}\nmode: listen\ntriggers: [{type: deadlock}]";
const CONNECT: &str = "selector: {matchLabels: {app: orders}}\nmode: connect\ncontainers: [api]";

#[test]
fn listen_mode_adds_a_locked_down_sidecar_the_volume_and_the_diagnostic_port() {
    let before = orders_pod();
    let patch = injection_patch(&before, &policy(LISTEN), &SidecarSettings::default()).expect("a patch");
    let after = apply(&before, &patch);
    let spec = after.spec.as_ref().unwrap();

    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["api", "worker", SIDECAR_NAME]);
    let sidecar = container(&after, SIDECAR_NAME);
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_ne!(sc.run_as_user, Some(0));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(caps.add, None, "listen mode needs no capability");
    assert!(sidecar.resources.as_ref().unwrap().limits.as_ref().unwrap().contains_key("memory"));
    assert_eq!(env(sidecar, "DUMPWATCH_POLICY"), Some("orders"));
    assert_eq!(env(sidecar, "DUMPWATCH_MODE"), Some("listen"));

    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 3, "the app's volume is kept, the shared one and the token are added");
    assert!(volumes.iter().any(|v| v.name == VOLUME_NAME && v.empty_dir.is_some()));
    for name in ["api", "worker", SIDECAR_NAME] {
        let c = container(&after, name);
        assert!(
            c.volume_mounts.iter().flatten().any(|m| m.name == VOLUME_NAME && m.mount_path == "/dumpwatch"),
            "{name} mounts the shared volume"
        );
    }
    // Every app container (the policy lists none) gets the port; existing env is kept.
    for name in ["api", "worker"] {
        assert_eq!(env(container(&after, name), DIAGNOSTIC_PORTS_ENV), Some("/dumpwatch/dumpwatch.sock,nosuspend"));
    }
    assert_eq!(env(container(&after, "api"), "ASPNETCORE_URLS"), Some("http://+:8080"));
    assert_eq!(env(sidecar, DIAGNOSTIC_PORTS_ENV), None);
    assert_eq!(spec.share_process_namespace, Some(true), "listen mode shares the PID namespace too (for 3.1)");
    assert_eq!(after.metadata.annotations.as_ref().unwrap()[INJECTED_ANNOTATION], "orders");
}

#[test]
fn connect_mode_shares_the_process_namespace_and_watches_only_the_listed_containers() {
    let before = orders_pod();
    let patch = injection_patch(&before, &policy(CONNECT), &SidecarSettings::default()).expect("a patch");
    let after = apply(&before, &patch);
    assert_eq!(after.spec.as_ref().unwrap().share_process_namespace, Some(true));
    let sidecar = container(&after, SIDECAR_NAME);
    let caps = sidecar.security_context.as_ref().unwrap().capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    // A capability added to a non-root container is cleared at exec (and Pod Security baseline
    // refuses SYS_PTRACE): connect mode reaches the app by running as its user instead.
    assert_eq!(caps.add, None);
    assert_eq!(env(sidecar, "DUMPWATCH_MODE"), Some("connect"));
    for name in ["api", "worker"] {
        assert_eq!(env(container(&after, name), DIAGNOSTIC_PORTS_ENV), None, "connect mode sets no port on {name}");
    }
    assert!(container(&after, "api").volume_mounts.iter().flatten().any(|m| m.name == VOLUME_NAME));
    assert_eq!(container(&after, "worker").volume_mounts, None, "worker is not watched");
}

#[test]
fn a_crash_trigger_sends_the_runtimes_crash_dumps_into_the_shared_volume() {
    let mut before = orders_pod();
    // The app's own choice of dump type wins; every other setting is added, in both modes.
    before.spec.as_mut().unwrap().containers[0].env.as_mut().unwrap().push(EnvVar {
        name: "DOTNET_DbgMiniDumpType".into(),
        value: Some("4".into()),
        ..Default::default()
    });
    for (mode, yaml) in [
        ("connect", "selector: {matchLabels: {app: orders}}\nmode: connect\ntriggers: [{type: crash}]"),
        ("listen", "selector: {matchLabels: {app: orders}}\nmode: listen\ntriggers: [{type: crash}, {type: deadlock}]"),
    ] {
        let patch = injection_patch(&before, &policy(yaml), &SidecarSettings::default()).expect("a patch");
        let after = apply(&before, &patch);
        for name in ["api", "worker"] {
            let c = container(&after, name);
            for prefix in ["DOTNET_", "COMPlus_"] {
                assert_eq!(env(c, &format!("{prefix}DbgEnableMiniDump")), Some("1"), "{mode} {name}");
                assert_eq!(
                    env(c, &format!("{prefix}DbgMiniDumpName")),
                    Some("/dumpwatch/.crash/core.%p"),
                    "{mode} {name}"
                );
            }
            assert_eq!(env(c, "DOTNET_EnableCrashReport"), Some("1"));
        }
        let api = container(&after, "api");
        assert_eq!(env(api, "DOTNET_DbgMiniDumpType"), Some("4"), "the app's own setting is kept");
        assert_eq!(api.env.iter().flatten().filter(|e| e.name == "DOTNET_DbgMiniDumpType").count(), 1);
        assert_eq!(env(container(&after, "worker"), "DOTNET_DbgMiniDumpType"), Some("2"));
        assert_eq!(env(container(&after, SIDECAR_NAME), "DOTNET_DbgEnableMiniDump"), None);
    }
    // Without a crash trigger the app's environment is not touched for it.
    let patch = injection_patch(&before, &policy(LISTEN), &SidecarSettings::default()).expect("a patch");
    assert_eq!(env(container(&apply(&before, &patch), "worker"), "DOTNET_DbgEnableMiniDump"), None);
}

#[test]
fn an_injected_pod_gets_no_second_patch() {
    for yaml in [LISTEN, CONNECT] {
        let p = policy(yaml);
        let once = apply(&orders_pod(), &injection_patch(&orders_pod(), &p, &SidecarSettings::default()).unwrap());
        assert_eq!(injection_patch(&once, &p, &SidecarSettings::default()), None);
        // Either marker alone is enough: the annotation (a sidecar renamed by hand) ...
        let mut renamed = once.clone();
        renamed.spec.as_mut().unwrap().containers.retain(|c| c.name != SIDECAR_NAME);
        assert_eq!(injection_patch(&renamed, &p, &SidecarSettings::default()), None);
        // ... or the container (annotations stripped).
        let mut stripped = once.clone();
        stripped.metadata.annotations = None;
        assert_eq!(injection_patch(&stripped, &p, &SidecarSettings::default()), None);
    }
}

#[test]
fn a_pod_the_selector_does_not_match_is_left_alone() {
    let mut other = orders_pod();
    other.metadata.labels = Some([("app".to_string(), "billing".to_string())].into());
    assert_eq!(injection_patch(&other, &policy(LISTEN), &SidecarSettings::default()), None);
    other.metadata.labels = None;
    assert_eq!(injection_patch(&other, &policy(LISTEN), &SidecarSettings::default()), None);
}

#[test]
fn existing_annotations_and_a_bare_pod_both_patch_cleanly() {
    // Annotations present: the marker is added with its `/` escaped (RFC 6901).
    let mut annotated = orders_pod();
    annotated.metadata.annotations = Some([("team".to_string(), "shop".to_string())].into());
    let after = apply(&annotated, &injection_patch(&annotated, &policy(LISTEN), &SidecarSettings::default()).unwrap());
    let a = after.metadata.annotations.unwrap();
    assert_eq!((a["team"].as_str(), a[INJECTED_ANNOTATION].as_str()), ("shop", "orders"));
    // The label the operator's pod watch selects on, beside the pod's own labels.
    let l = after.metadata.labels.unwrap();
    assert_eq!((l["app"].as_str(), l[INJECTED_LABEL].as_str()), ("orders", "true"));

    // A pod with no volumes, env or mounts at all: the arrays are created.
    let bare =
        pod(json!({"metadata": {"name": "b", "labels": {"app": "orders"}}, "spec": {"containers": [{"name": "app"}]}}));
    let settings = SidecarSettings { volume_size_limit: Some("2Gi".into()), ..SidecarSettings::default() };
    let after = apply(&bare, &injection_patch(&bare, &policy(LISTEN), &settings).unwrap());
    let vol = &after.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    assert_eq!(vol.empty_dir.as_ref().unwrap().size_limit, Some(Quantity("2Gi".into())));
    assert_eq!(env(container(&after, "app"), DIAGNOSTIC_PORTS_ENV), Some("/dumpwatch/dumpwatch.sock,nosuspend"));
}

#[test]
fn a_connect_pod_that_already_shares_its_pid_namespace_keeps_it() {
    let mut shared = orders_pod();
    shared.spec.as_mut().unwrap().share_process_namespace = Some(true);
    let patch = injection_patch(&shared, &policy(CONNECT), &SidecarSettings::default()).unwrap();
    let text = serde_json::to_string(&patch).unwrap();
    assert!(!text.contains("shareProcessNamespace"), "{text}");
    assert_eq!(apply(&shared, &patch).spec.unwrap().share_process_namespace, Some(true));
}

#[test]
fn the_sidecar_alone_gets_a_projected_token_of_its_audience_and_the_operator_address() {
    let before = orders_pod();
    let settings = SidecarSettings {
        operator_url: "https://op.dumpwatch.svc:8443".into(),
        operator_ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ..SidecarSettings::default()
    };
    let after = apply(&before, &injection_patch(&before, &policy(LISTEN), &settings).unwrap());
    let volumes = after.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    let token = volumes.iter().find(|v| v.name == TOKEN_VOLUME_NAME).expect("the token volume");
    let sources = token.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let sat = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(sat.audience.as_deref(), Some("dumpwatch.dev/sidecar"));
    assert_eq!(sat.expiration_seconds, Some(3600));
    assert_eq!(sat.path, "token");

    let sidecar = container(&after, SIDECAR_NAME);
    let mount = sidecar.volume_mounts.iter().flatten().find(|m| m.name == TOKEN_VOLUME_NAME).unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/var/run/secrets/dumpwatch.dev", Some(true)));
    assert_eq!(env(sidecar, "DUMPWATCH_TOKEN_FILE"), Some("/var/run/secrets/dumpwatch.dev/token"));
    assert_eq!(env(sidecar, "DUMPWATCH_OPERATOR_URL"), Some("https://op.dumpwatch.svc:8443"));
    assert_eq!(env(sidecar, "DUMPWATCH_OPERATOR_CA"), Some(settings.operator_ca.as_str()));
    let port = &sidecar.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("dw-metrics"), 9464));
    for name in ["api", "worker"] {
        let c = container(&after, name);
        assert!(!c.volume_mounts.iter().flatten().any(|m| m.name == TOKEN_VOLUME_NAME), "{name} gets no token");
        assert_eq!(env(c, "DUMPWATCH_TOKEN_FILE"), None);
    }

    // A pod without any volume: both arrive, the shared one first.
    let bare =
        pod(json!({"metadata": {"name": "b", "labels": {"app": "orders"}}, "spec": {"containers": [{"name": "app"}]}}));
    let after = apply(&bare, &injection_patch(&bare, &policy(CONNECT), &settings).unwrap());
    let names: Vec<String> = after.spec.unwrap().volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, [VOLUME_NAME, TOKEN_VOLUME_NAME]);
}

#[test]
fn a_pod_whose_volume_names_collide_with_ours_is_left_alone() {
    for taken in [VOLUME_NAME, TOKEN_VOLUME_NAME] {
        let mut p = orders_pod();
        p.spec.as_mut().unwrap().volumes.as_mut().unwrap().push(Volume { name: taken.into(), ..Default::default() });
        assert_eq!(volume_conflicts(&p), [taken]);
        assert_eq!(injection_patch(&p, &policy(LISTEN), &SidecarSettings::default()), None, "{taken}");
    }
    assert!(volume_conflicts(&orders_pod()).is_empty());
}

#[test]
fn selects_and_is_injected_read_the_labels_and_both_markers() {
    let p = orders_pod();
    assert!(selects(&policy(LISTEN), &p));
    assert!(selects(&policy("selector: {}"), &p), "an empty selector matches every pod");
    assert!(!selects(&policy("selector: {matchLabels: {app: orders, tier: web}}"), &p));
    assert!(!is_injected(&p));
    let once = apply(&p, &injection_patch(&p, &policy(LISTEN), &SidecarSettings::default()).unwrap());
    assert!(is_injected(&once));
}

const ON_CLAIM: &str =
    "selector: {matchLabels: {app: orders}}\nmode: listen\nstorage: {volume: {path: /dumps, claimName: dumps}}";

#[test]
fn a_claim_is_mounted_in_the_sidecar_only_and_the_sidecar_is_told_where() {
    let before = orders_pod();
    let patch = injection_patch(&before, &policy(ON_CLAIM), &SidecarSettings::default()).expect("a patch");
    let after = apply(&before, &patch);
    let volumes = after.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    let store = volumes.iter().find(|v| v.name == STORE_VOLUME_NAME).expect("the claim's volume");
    assert_eq!(store.persistent_volume_claim.as_ref().unwrap().claim_name, "dumps");
    assert!(volumes.iter().any(|v| v.name == VOLUME_NAME && v.empty_dir.is_some()), "captures in progress stay local");
    let sidecar = container(&after, SIDECAR_NAME);
    let mounts: Vec<(&str, &str)> =
        sidecar.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str())).collect();
    assert!(mounts.contains(&(STORE_VOLUME_NAME, "/dumps")), "{mounts:?}");
    assert!(mounts.contains(&(VOLUME_NAME, "/dumpwatch")), "{mounts:?}");
    assert_eq!(env(sidecar, STORE_ENV), Some("/dumps"));
    for app in ["api", "worker"] {
        let c = container(&after, app);
        assert!(
            !c.volume_mounts.iter().flatten().any(|m| m.name == STORE_VOLUME_NAME),
            "{app} must not see other pods' dumps"
        );
    }
}

#[test]
fn without_a_claim_the_sidecar_is_not_told_of_a_store() {
    let after =
        apply(&orders_pod(), &injection_patch(&orders_pod(), &policy(LISTEN), &SidecarSettings::default()).unwrap());
    assert_eq!(env(container(&after, SIDECAR_NAME), STORE_ENV), None);
    assert!(!after.spec.unwrap().volumes.unwrap().iter().any(|v| v.name == STORE_VOLUME_NAME));
}

#[test]
fn a_claim_path_colliding_with_the_sidecars_mounts_is_refused() {
    let settings = SidecarSettings::default();
    for path in ["/dumpwatch", "/dumpwatch/", "/dumpwatch/store", "/", "/var/run/secrets"] {
        let p = policy(&format!(
            "selector: {{matchLabels: {{app: orders}}}}\nstorage: {{volume: {{path: {path}, claimName: dumps}}}}"
        ));
        let why = store_path_conflict(&p, &settings).unwrap_or_else(|| panic!("{path} collides"));
        assert!(why.contains("collides"), "{why}");
        assert!(injection_patch(&orders_pod(), &p, &settings).is_none(), "{path}: not injected");
    }
    assert_eq!(store_path_conflict(&policy(ON_CLAIM), &settings), None);
    // The default path without a claim is the emptyDir itself: nothing to mount, nothing to refuse.
    assert_eq!(store_path_conflict(&policy(LISTEN), &settings), None);
}

fn job_pod() -> Pod {
    let mut p = orders_pod();
    p.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "u-1", "controller": true
        }))
        .unwrap(),
    ]);
    p
}

#[test]
fn a_native_sidecar_is_the_first_init_container_and_always_restarts() {
    let mut before = orders_pod();
    before.spec.as_mut().unwrap().init_containers =
        Some(vec![Container { name: "migrate".into(), ..Default::default() }]);
    let settings = SidecarSettings { native: true, ..SidecarSettings::default() };
    let after = apply(&before, &injection_patch(&before, &policy(LISTEN), &settings).unwrap());
    let spec = after.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["api", "worker"], "the app's containers are untouched");
    let init: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, [SIDECAR_NAME, "migrate"], "before the app's init containers");
    assert_eq!(spec.init_containers.as_ref().unwrap()[0].restart_policy.as_deref(), Some("Always"));
    assert!(is_injected(&after) && injection_patch(&after, &policy(LISTEN), &settings).is_none());
    // Without init containers the array is created.
    let bare = apply(&orders_pod(), &injection_patch(&orders_pod(), &policy(CONNECT), &settings).unwrap());
    assert_eq!(bare.spec.unwrap().init_containers.unwrap()[0].name, SIDECAR_NAME);
}

#[test]
fn native_sidecars_from_kubernetes_1_29() {
    for (major, minor, native) in [
        ("1", "28", false),
        ("1", "29", true),
        ("1", "36", true),
        ("1", "30+", true),
        ("1", "27+", false),
        ("2", "0", true),
        ("", "", false),
    ] {
        assert_eq!(native_sidecars_supported(major, minor), native, "{major}.{minor}");
    }
}

#[test]
fn the_operators_own_pods_and_job_pods_without_native_sidecars_are_never_injected() {
    let mut analysis = orders_pod();
    analysis.metadata.labels.as_mut().unwrap().insert(MANAGED_BY_LABEL.into(), MANAGED_BY_OPERATOR.into());
    for native in [false, true] {
        let settings = SidecarSettings { native, ..SidecarSettings::default() };
        assert!(refusal(&analysis, &settings).unwrap().contains("dumpwatch's own"));
        assert_eq!(injection_patch(&analysis, &policy(LISTEN), &settings), None);
    }
    let regular = SidecarSettings::default();
    assert!(refusal(&job_pod(), &regular).unwrap().contains("never let the Job complete"));
    assert_eq!(injection_patch(&job_pod(), &policy(LISTEN), &regular), None);
    let native = SidecarSettings { native: true, ..SidecarSettings::default() };
    assert_eq!(refusal(&job_pod(), &native), None, "a native sidecar lets the Job complete");
    assert!(injection_patch(&job_pod(), &policy(LISTEN), &native).is_some());
}

fn with_users(pod_user: Option<i64>, api_user: Option<i64>, worker_user: Option<i64>) -> Pod {
    let mut p = orders_pod();
    let spec = p.spec.as_mut().unwrap();
    spec.security_context =
        pod_user.map(|u| serde_json::from_value(json!({"runAsUser": u, "runAsGroup": u + 1})).unwrap());
    for (c, u) in spec.containers.iter_mut().zip([api_user, worker_user]) {
        c.security_context = u.map(|u| serde_json::from_value(json!({"runAsUser": u})).unwrap());
    }
    p
}

#[test]
fn the_sidecar_runs_as_the_apps_user_from_the_pod_spec() {
    let p = policy(LISTEN);
    let user_of = |pod: &Pod| {
        let after = apply(pod, &injection_patch(pod, &p, &SidecarSettings::default()).unwrap());
        let sc = container(&after, SIDECAR_NAME).security_context.clone().unwrap();
        let note = after.metadata.annotations.unwrap()[SIDECAR_USER_ANNOTATION].clone();
        (sc.run_as_user, sc.run_as_group, note)
    };
    // The container's own user wins over the pod's; the pod's group is kept (the kernel wants
    // both to match before it shows another process' /proc/<pid>/root).
    let (uid, gid, note) = user_of(&with_users(Some(1000), Some(1500), Some(1500)));
    assert_eq!((uid, gid), (Some(1500), Some(1001)));
    assert!(note.starts_with("1500 (the app's"), "{note}");
    // The pod's user alone; its group.
    assert_eq!(user_of(&with_users(Some(1000), None, None)).0, Some(1000));
    // No user in the spec, or root: the default non-root user, said in the annotation.
    for pod in [with_users(None, None, None), with_users(Some(0), None, None)] {
        let (uid, gid, note) = user_of(&pod);
        assert_eq!((uid, gid), (Some(65532), Some(65532)));
        assert!(note.contains("default"), "{note}");
    }
}

#[test]
fn the_user_choice_warns_when_the_sidecar_cannot_reach_an_app() {
    let c = |p: &Pod| p.spec.as_ref().unwrap().containers.clone();
    let unknown = with_users(None, None, None);
    let w = sidecar_user(&unknown, &c(&unknown).iter().collect::<Vec<_>>(), 65532).warning.unwrap();
    assert!(w.contains("does not say which user container api runs as") && w.contains("runAsUser"), "{w}");
    let root = with_users(Some(0), None, None);
    let w = sidecar_user(&root, &c(&root).iter().collect::<Vec<_>>(), 65532).warning.unwrap();
    assert!(w.contains("runs as root"), "{w}");
    let mixed = with_users(None, Some(1000), Some(2000));
    let u = sidecar_user(&mixed, &c(&mixed).iter().collect::<Vec<_>>(), 65532);
    assert_eq!((u.uid, u.from_spec), (1000, true));
    assert!(u.warning.unwrap().contains("containers worker run as other users"));
    let same = with_users(Some(1000), None, None);
    assert_eq!(sidecar_user(&same, &c(&same).iter().collect::<Vec<_>>(), 65532).warning, None);
    // A user without a group: the user's number is a guess, said as one.
    let mut no_group = with_users(None, Some(1000), Some(1000));
    no_group.spec.as_mut().unwrap().security_context = None;
    let u = sidecar_user(&no_group, &c(&no_group).iter().collect::<Vec<_>>(), 65532);
    assert_eq!((u.uid, u.gid), (1000, 1000));
    assert!(u.warning.unwrap().contains("runAsGroup"));
}

#[test]
fn the_sidecar_meets_pod_security_restricted_in_both_modes() {
    for yaml in [LISTEN, CONNECT] {
        let pod = with_users(Some(1000), None, None);
        let after = apply(&pod, &injection_patch(&pod, &policy(yaml), &SidecarSettings::default()).unwrap());
        let sc = container(&after, SIDECAR_NAME).security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.unwrap();
        assert_eq!((caps.drop.as_deref(), caps.add), (Some(&["ALL".to_string()][..]), None));
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        // No host path: restricted allows none.
        assert!(!serde_json::to_string(&after.spec).unwrap().contains("hostPath"));
        // Listen mode shares the PID namespace too (a 3.1 runtime never dials the port).
        assert_eq!(after.spec.unwrap().share_process_namespace, Some(true), "{yaml}");
    }
}
