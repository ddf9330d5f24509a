//! The mutating webhook's pure decision: which JSON patch, if any, injects the sidecar into a pod.

use std::collections::BTreeMap;
use std::path::Path;

use api::{DumpPolicy, Mode, TriggerKind};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, Pod, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

/// Name of the injected container; its presence means "already injected".
pub const SIDECAR_NAME: &str = "dumpwatch-sidecar";
/// Annotation set on an injected pod, valued with the policy's name.
pub const INJECTED_ANNOTATION: &str = "dumpwatch.dev/injected";
/// Label set on an injected pod (value `true`): the operator's pod watch selects on it, so it
/// caches only the pods it injected (labels, unlike annotations, can be selected server-side).
/// Pods injected by an operator older than this label carry only the annotation.
pub const INJECTED_LABEL: &str = "dumpwatch.dev/injected";
/// The shared emptyDir (diagnostic socket, captures in progress).
pub const VOLUME_NAME: &str = "dumpwatch";
/// The environment variable that makes a .NET 5+ runtime connect to the sidecar.
pub const DIAGNOSTIC_PORTS_ENV: &str = "DOTNET_DiagnosticPorts";
/// The policy's claim (`storage.volume.claimName`), mounted in the sidecar only, at `volume.path`.
pub const STORE_VOLUME_NAME: &str = "dumpwatch-store";
/// Tells the sidecar where the claim is mounted: finished captures go there.
pub const STORE_ENV: &str = "DUMPWATCH_STORE";
/// The projected ServiceAccount token that proves to the operator which pod a sidecar runs in.
pub const TOKEN_VOLUME_NAME: &str = "dumpwatch-token";
/// Audience of the sidecar's token: the operator's TokenReview asks for exactly this one, so the
/// token is useless against the API server and any other service.
pub const SIDECAR_TOKEN_AUDIENCE: &str = "dumpwatch.dev/sidecar";
/// Lifetime of the projected token; the kubelet refreshes it well before.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// Where the token volume is mounted in the sidecar (file `token`).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/dumpwatch.dev";
/// The label every pod the operator makes carries (analysis and cleanup Jobs): such a pod is
/// never injected, whatever the webhook's object selector says.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_OPERATOR: &str = "dumpwatch-operator";
/// Annotation on an injected pod saying which user the sidecar runs as, and why.
pub const SIDECAR_USER_ANNOTATION: &str = "dumpwatch.dev/sidecar-user";

/// How the sidecar container is built (from the operator's configuration / the chart's values).
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarSettings {
    pub image: String,
    pub resources: ResourceRequirements,
    /// UID and GID the sidecar runs as when the pod spec does not say the app's (never 0).
    pub run_as_user: i64,
    /// Inject the sidecar as a native sidecar: an init container with `restartPolicy: Always`
    /// (Kubernetes 1.29 and later, see [`native_sidecars_supported`]). It starts before the app
    /// (listen mode sees the runtime's first connection) and never keeps a Job's pod running.
    pub native: bool,
    /// Where the shared volume is mounted in the sidecar and the app containers.
    pub mount_path: String,
    /// Size limit of the shared emptyDir.
    pub volume_size_limit: Option<String>,
    /// The operator's HTTPS API as a sidecar reaches it.
    pub operator_url: String,
    /// PEM of the CA that signs the operator's serving certificate (the sidecar trusts only it).
    pub operator_ca: String,
    /// The sidecar's /metrics port: declared on the container and given to it as `DUMPWATCH_HTTP`.
    pub metrics_port: i32,
    pub metrics_port_name: String,
}

impl Default for SidecarSettings {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_string());
        Self {
            image: "ghcr.io/dumpwatch/sidecar:0.1.0".into(),
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".into(), q("10m")), ("memory".into(), q("32Mi"))])),
                limits: Some(BTreeMap::from([("memory".into(), q("128Mi"))])),
                ..Default::default()
            },
            run_as_user: 65532,
            native: false,
            mount_path: "/dumpwatch".into(),
            volume_size_limit: None,
            operator_url: "https://dumpwatch-operator.dumpwatch.svc:8443".into(),
            operator_ca: String::new(),
            metrics_port: 9464,
            metrics_port_name: "dw-metrics".into(),
        }
    }
}

/// Whether `policy`'s selector matches `pod`'s labels (an empty selector matches every pod).
pub fn selects(policy: &DumpPolicy, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    policy.spec.selector.match_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether `policy` watches container `c` (no `containers` list: every one).
pub fn watches(policy: &DumpPolicy, c: &Container) -> bool {
    policy.spec.containers.is_empty() || policy.spec.containers.contains(&c.name)
}

/// The pod's containers `policy` watches.
pub fn watched_containers<'a>(pod: &'a Pod, policy: &DumpPolicy) -> Vec<&'a Container> {
    pod.spec.iter().flat_map(|s| s.containers.iter()).filter(|c| watches(policy, c)).collect()
}

/// Whether `pod` already carries the sidecar (either marker is enough).
pub fn is_injected(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == SIDECAR_NAME))
        || pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
}

/// Whether the API server of this version runs native sidecars (init containers with
/// `restartPolicy: Always`): beta and on by default from 1.29, GA in 1.33.
pub fn native_sidecars_supported(major: &str, minor: &str) -> bool {
    // Minors may carry a suffix ("29+" on some managed clusters).
    let number = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
    matches!((number(major), number(minor)), (Some(1), Some(m)) if m >= 29) || number(major).is_some_and(|m| m > 1)
}

/// Why the sidecar must not go into `pod` at all, if it must not: a pod the operator made
/// itself (an analysis or cleanup Job would wait for a sidecar that never ends, and would
/// watch nothing), or a Job's pod where the sidecar can only be a regular container (it would
/// keep the pod, and so the Job, running forever).
pub fn refusal(pod: &Pod, sidecar: &SidecarSettings) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(MANAGED_BY_LABEL)).is_some_and(|v| v == MANAGED_BY_OPERATOR) {
        return Some(format!("the pod is dumpwatch's own ({MANAGED_BY_LABEL}={MANAGED_BY_OPERATOR})"));
    }
    let owned_by_job = pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job");
    if owned_by_job && !sidecar.native {
        return Some(
            "the pod belongs to a Job and this API server has no native sidecars (Kubernetes < 1.29): \
             a regular sidecar container would never let the Job complete"
                .into(),
        );
    }
    None
}

/// The user the sidecar runs as, and why (for the annotation and the webhook's warning).
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarUser {
    pub uid: i64,
    /// The app's group (`runAsGroup`, else the user's number): the kernel lets a process read
    /// another's `/proc/<pid>/root` only when users and groups both match.
    pub gid: i64,
    /// The pod spec names the watched containers' user: the sidecar runs as that user, so it can
    /// open the runtime's owner-only diagnostic socket and read `/proc/<pid>/root` (connect
    /// mode), and the runtime can write into the directories the sidecar makes (listen mode).
    pub from_spec: bool,
    /// Said to the client when the sidecar's user may not reach the app.
    pub warning: Option<String>,
}

/// How [`SidecarUser::annotation`] ends when the user is the default, not the app's.
const DEFAULT_USER_NOTE: &str = "(default: the app's user is not known from the pod spec)";

impl SidecarUser {
    /// The value of [`SIDECAR_USER_ANNOTATION`]: the uid and where it came from.
    pub fn annotation(&self) -> String {
        if self.from_spec {
            format!("{} (the app's, from the pod spec)", self.uid)
        } else {
            format!("{} {DEFAULT_USER_NOTE}", self.uid)
        }
    }
}

/// Whether an injected pod's sidecar runs as a default user rather than the app's (read from
/// its [`SIDECAR_USER_ANNOTATION`]): then it cannot reach the app's runtime.
pub fn runs_as_default_user(pod: &Pod) -> bool {
    let note = pod.metadata.annotations.as_ref().and_then(|a| a.get(SIDECAR_USER_ANNOTATION));
    note.is_some_and(|n| n.ends_with(DEFAULT_USER_NOTE))
}

/// The app's user as the pod spec sets it: the first watched container's `runAsUser` (else the
/// pod's), and its group likewise (else the user's number, with a warning). Root (0) and a spec
/// without a user fall back to `default_uid`: the sidecar never runs as root, and an image's own
/// `USER` is unknown at admission.
pub fn sidecar_user(pod: &Pod, watched: &[&Container], default_uid: i64) -> SidecarUser {
    let pod_ctx = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let user_of = |c: &Container| {
        let ctx = c.security_context.as_ref();
        let uid = ctx.and_then(|x| x.run_as_user).or(pod_ctx.and_then(|x| x.run_as_user));
        let gid = ctx.and_then(|x| x.run_as_group).or(pod_ctx.and_then(|x| x.run_as_group));
        (c.name.clone(), uid, gid)
    };
    let users: Vec<(String, Option<i64>, Option<i64>)> = watched.iter().map(|c| user_of(c)).collect();
    let default =
        |warning: String| SidecarUser { uid: default_uid, gid: default_uid, from_spec: false, warning: Some(warning) };
    let Some((name, uid, gid)) = users.first().cloned() else {
        return default("no container to watch".into());
    };
    match uid {
        None => default(format!(
            "the pod spec does not say which user container {name} runs as: the sidecar runs as {default_uid} and \
             cannot reach a .NET process of another user (its diagnostic socket and files are the user's own); \
             set securityContext.runAsUser on the pod or the container"
        )),
        Some(0) => default(format!(
            "container {name} runs as root: the sidecar never does (it runs as {default_uid}) and cannot reach a \
             root process; run the app as a non-root user"
        )),
        Some(uid) => {
            let differing: Vec<&str> =
                users.iter().filter(|(_, u, _)| *u != Some(uid)).map(|(n, _, _)| n.as_str()).collect();
            let warning = if !differing.is_empty() {
                Some(format!(
                    "the sidecar runs as user {uid} (container {name}); watched containers {} run as other users, \
                     which it cannot reach",
                    differing.join(", ")
                ))
            } else if gid.is_none() {
                Some(format!(
                    "the pod spec names container {name}'s user but not its group: the sidecar runs as {uid}:{uid} and \
                     reaches the app through /proc only if that is the app's group too; set securityContext.runAsGroup"
                ))
            } else {
                None
            };
            SidecarUser { uid, gid: gid.unwrap_or(uid), from_spec: true, warning }
        }
    }
}

/// The pod's own volumes whose names the injection needs: adding ours next to them would make
/// the API server refuse the pod, so such a pod is left alone.
pub fn volume_conflicts(pod: &Pod) -> Vec<String> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter(|v| v.name == VOLUME_NAME || v.name == TOKEN_VOLUME_NAME || v.name == STORE_VOLUME_NAME)
        .map(|v| v.name.clone())
        .collect()
}

/// The claim a policy stores finished captures on, with the path it is mounted at in the sidecar.
pub fn store_claim(policy: &DumpPolicy) -> Option<(String, String)> {
    let volume = policy.spec.storage.volume.as_ref().filter(|_| policy.spec.storage.s3.is_none())?;
    volume.claim_name.clone().map(|claim| (claim, volume.path.clone()))
}

/// Why the policy's claim cannot be mounted beside the sidecar's own mounts, if it cannot: the
/// same or a nested path would hide the capture dir (or the token) or be hidden by it.
pub fn store_path_conflict(policy: &DumpPolicy, sidecar: &SidecarSettings) -> Option<String> {
    let (_, path) = store_claim(policy)?;
    let nested = |a: &str, b: &str| {
        let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
        a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
    };
    if !path.starts_with('/') {
        return Some(format!("storage.volume.path {path:?} is not an absolute path"));
    }
    for (theirs, what) in [(sidecar.mount_path.as_str(), "the sidecar's capture dir"), (TOKEN_MOUNT_PATH, "its token")]
    {
        if nested(&path, theirs) {
            return Some(format!(
                "storage.volume.path {path} collides with {what} at {theirs}: choose another path (e.g. /dumps)"
            ));
        }
    }
    None
}

/// The JSON patch that injects the sidecar of `policy` into `pod`, or `None` when the policy
/// does not select the pod, the pod is already injected (so a pod is never injected twice), or
/// one of the pod's volumes already has a name the injection needs.
pub fn injection_patch(pod: &Pod, policy: &DumpPolicy, sidecar: &SidecarSettings) -> Option<json_patch::Patch> {
    let spec = pod.spec.as_ref()?;
    if !selects(policy, pod)
        || is_injected(pod)
        || refusal(pod, sidecar).is_some()
        || !volume_conflicts(pod).is_empty()
        || store_path_conflict(policy, sidecar).is_some()
    {
        return None;
    }
    let annotations = pod.metadata.annotations.as_ref();
    let labels = pod.metadata.labels.as_ref();
    let listen = policy.spec.mode == Mode::Listen;
    let crash = policy.spec.triggers.iter().any(|t| t.kind == TriggerKind::Crash);
    let watched = |c: &Container| watches(policy, c);
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let mount = VolumeMount { name: VOLUME_NAME.into(), mount_path: sidecar.mount_path.clone(), ..Default::default() };

    let user = sidecar_user(pod, &watched_containers(pod, policy), sidecar.run_as_user);
    let user_note = user.annotation();

    let mut ops = Vec::new();
    let mut add = |path: String, value: Value| ops.push(json!({"op": "add", "path": path, "value": value}));

    // Marker first: the webhook may be called again (reinvocationPolicy) on the patched pod.
    match annotations {
        None => add(
            "/metadata/annotations".into(),
            json!({ INJECTED_ANNOTATION: policy_name, SIDECAR_USER_ANNOTATION: user_note }),
        ),
        Some(_) => {
            add(format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)), json!(policy_name));
            add(format!("/metadata/annotations/{}", escape(SIDECAR_USER_ANNOTATION)), json!(user_note));
        }
    }
    match labels {
        None => add("/metadata/labels".into(), json!({ INJECTED_LABEL: "true" })),
        Some(_) => add(format!("/metadata/labels/{}", escape(INJECTED_LABEL)), json!("true")),
    }

    let volume = Volume {
        name: VOLUME_NAME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: sidecar.volume_size_limit.clone().map(Quantity),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Volume {
        name: TOKEN_VOLUME_NAME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(SIDECAR_TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    append(&mut add, "/spec/volumes", spec.volumes.is_some(), to_value(&volume));
    add("/spec/volumes/-".into(), to_value(&token));
    let store = store_claim(policy);
    if let Some((claim, _)) = &store {
        let volume = Volume {
            name: STORE_VOLUME_NAME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        };
        add("/spec/volumes/-".into(), to_value(&volume));
    }

    for (i, c) in spec.containers.iter().enumerate().filter(|(_, c)| watched(c)) {
        if !c.volume_mounts.iter().flatten().any(|m| m.mount_path == sidecar.mount_path) {
            append(
                &mut add,
                &format!("/spec/containers/{i}/volumeMounts"),
                c.volume_mounts.is_some(),
                to_value(&mount),
            );
        }
        if listen && !c.env.iter().flatten().any(|e| e.name == DIAGNOSTIC_PORTS_ENV) {
            let env = EnvVar {
                name: DIAGNOSTIC_PORTS_ENV.into(),
                value: Some(format!("{}/dumpwatch.sock,nosuspend", sidecar.mount_path)),
                ..Default::default()
            };
            append(&mut add, &format!("/spec/containers/{i}/env"), c.env.is_some(), to_value(&env));
        }
        // A crash trigger: the runtime writes its crash dump (and report) into the shared volume,
        // where the sidecar picks it up. The app's own settings win.
        if crash {
            // The env list exists if the app had one or the listen-mode variable above created it.
            let mut has_env = c.env.is_some() || listen;
            for (name, value) in api::crash_dumps::app_environment(Path::new(&sidecar.mount_path)) {
                if c.env.iter().flatten().any(|e| e.name == name) {
                    continue;
                }
                let env = EnvVar { name, value: Some(value), ..Default::default() };
                append(&mut add, &format!("/spec/containers/{i}/env"), has_env, to_value(&env));
                has_env = true;
            }
        }
    }

    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
        ..Default::default()
    };
    let mut env = vec![
        EnvVar { name: "POD_NAME".into(), value_from: Some(field("metadata.name")), ..Default::default() },
        EnvVar { name: "POD_NAMESPACE".into(), value_from: Some(field("metadata.namespace")), ..Default::default() },
        EnvVar { name: "DUMPWATCH_POLICY".into(), value: Some(policy_name), ..Default::default() },
        EnvVar {
            name: "DUMPWATCH_MODE".into(),
            value: Some(if listen { "listen" } else { "connect" }.into()),
            ..Default::default()
        },
        EnvVar {
            name: "DUMPWATCH_OPERATOR_URL".into(),
            value: Some(sidecar.operator_url.clone()),
            ..Default::default()
        },
        EnvVar { name: "DUMPWATCH_OPERATOR_CA".into(), value: Some(sidecar.operator_ca.clone()), ..Default::default() },
        // The pod's IP only (what the kubelet's probes and Prometheus reach), not every address.
        EnvVar { name: "DUMPWATCH_POD_IP".into(), value_from: Some(field("status.podIP")), ..Default::default() },
        EnvVar {
            name: "DUMPWATCH_HTTP".into(),
            value: Some(format!("$(DUMPWATCH_POD_IP):{}", sidecar.metrics_port)),
            ..Default::default()
        },
        EnvVar {
            name: "DUMPWATCH_TOKEN_FILE".into(),
            value: Some(format!("{TOKEN_MOUNT_PATH}/token")),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount,
        // The token is mounted in the sidecar only: the app never holds a credential of ours.
        VolumeMount {
            name: TOKEN_VOLUME_NAME.into(),
            mount_path: TOKEN_MOUNT_PATH.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if let Some((_, path)) = &store {
        // The claim holds every pod's captures: only the sidecar sees it, never the app.
        mounts.push(VolumeMount { name: STORE_VOLUME_NAME.into(), mount_path: path.clone(), ..Default::default() });
        env.push(EnvVar { name: STORE_ENV.into(), value: Some(path.clone()), ..Default::default() });
    }
    let container = Container {
        name: SIDECAR_NAME.into(),
        image: Some(sidecar.image.clone()),
        args: Some(vec!["--storage".into(), sidecar.mount_path.clone()]),
        env: Some(env),
        resources: Some(sidecar.resources.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(sidecar.metrics_port_name.clone()),
            container_port: sidecar.metrics_port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        // Pod Security "restricted" as it stands: non-root, no escalation, every capability
        // dropped (a capability added to a non-root container is not effective anyway: the kernel
        // clears it at exec; the same user is what reaches the app), RuntimeDefault seccomp.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(user.uid),
            run_as_group: Some(user.gid),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        restart_policy: sidecar.native.then(|| "Always".to_string()),
        ..Default::default()
    };
    if sidecar.native {
        // First among the init containers: it runs before the app's and the others' init
        // containers, so it is there when the runtime starts (listen mode's first connection).
        match &spec.init_containers {
            Some(_) => add("/spec/initContainers/0".into(), to_value(&container)),
            None => add("/spec/initContainers".into(), json!([to_value(&container)])),
        }
    } else {
        add("/spec/containers/-".into(), to_value(&container));
    }

    // Both modes: connect mode needs it, and in listen mode it lets the sidecar reach runtimes
    // that never dial the diagnostic port (.NET Core 3.1 ignores DOTNET_DiagnosticPorts).
    if spec.share_process_namespace != Some(true) {
        add("/spec/shareProcessNamespace".into(), json!(true));
    }
    Some(serde_json::from_value(Value::Array(ops)).expect("well-formed JSON patch operations"))
}

/// Adds `value` to the array at `path`, creating the array when the field is absent.
fn append(add: &mut impl FnMut(String, Value), path: &str, exists: bool, value: Value) {
    if exists { add(format!("{path}/-"), value) } else { add(path.into(), json!([value])) }
}

/// RFC 6901 escaping of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("k8s-openapi types serialize")
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
