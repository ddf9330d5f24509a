//! The analysis Job of a snapshot, as a pure function: one pod that runs `dumpwatch analyze`
//! on the snapshot's artifacts and posts the findings document to the operator
//! (docs/operator.md, "The analysis Job runs").

use std::collections::BTreeMap;

use api::{Artifact, DumpPolicy, DumpSnapshot, SnapshotVolume};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

/// Label on the Job and its pod: the snapshot it analyzes (the sidecar API accepts findings
/// for a snapshot only from a pod carrying it).
pub const SNAPSHOT_LABEL: &str = "dumpwatch.dev/snapshot";
/// Audience of the Job's projected token (the sidecar API's `/v1/jobs/*` routes).
pub const ANALYZER_AUDIENCE: &str = "dumpwatch.dev/analyzer";
/// Where the token is mounted (file `token`), as in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/dumpwatch.dev";
/// Scratch space for downloads and decompression; not `/tmp`, which a test node would hide.
pub const SCRATCH_DIR: &str = "/scratch";
/// Microsoft's public symbol server, where dotnet-dump and SOS find DACs too.
pub const MICROSOFT_SYMBOL_SERVER: &str = "https://msdl.microsoft.com/download/symbols";
/// Uid of the analyzer (the distroless "nonroot" user).
pub const ANALYZER_UID: i64 = 65532;

/// How the operator runs analysis Jobs (flags of `dumpwatch-operator`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// Image holding the `dumpwatch` CLI as its entrypoint.
    pub image: String,
    /// Base URL of the operator's HTTPS API, as pods reach it.
    pub operator_url: String,
    /// PEM of the operator's CA, given to the CLI in `DUMPWATCH_OPERATOR_CA`.
    pub operator_ca_pem: Option<String>,
    /// Retries of a failed analysis pod (clamped to 1..=2: a dump that crashes the analyzer
    /// twice will crash it a third time).
    pub backoff_limit: i32,
    /// How long a finished Job stays for `kubectl logs`.
    pub ttl_after_finished_secs: i32,
    /// Disk for downloading and decompressing the dump.
    pub scratch_size: String,
    /// Symbol servers (comma-separated) the CLI may fetch a missing DAC from, given to it in
    /// `DUMPWATCH_SYMBOL_SERVER`; empty: no download. Listen-mode dumps carry no DAC and the
    /// Job's image has no runtime, so without one such dumps cannot be analyzed.
    pub symbol_server: String,
    /// The admin DAC store (docs/security.md, "DAC provenance"): a volume source mounted
    /// read-only at [`DAC_STORE_DIR`] and given to the CLI as `--dac-store`. Its name is ours.
    pub dac_store: Option<Volume>,
    /// Pass `--trust-dac-beside-dump`: load the DAC stored with the capture. That file was
    /// chosen by the app pod, so this trusts the app pods (chart: `analysis.trustCapturedDacs`).
    pub trust_captured_dacs: bool,
    /// Let the CLI take the DAC from .NET runtimes inside the analyzer image (when their
    /// libcoreclr.so has the dumped build-id). Off: the Job passes `--no-local-runtime`, so an
    /// image never serves a DAC nobody chose; on for images built with runtimes on purpose.
    pub local_runtimes: bool,
}

/// Where the DAC store is mounted in analysis Jobs.
pub const DAC_STORE_DIR: &str = "/dac-store";

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/dumpwatch/dumpwatch:latest".into(),
            operator_url: "https://dumpwatch-operator.dumpwatch.svc:8443".into(),
            operator_ca_pem: None,
            backoff_limit: 1,
            ttl_after_finished_secs: 3600,
            scratch_size: "20Gi".into(),
            symbol_server: MICROSOFT_SYMBOL_SERVER.into(),
            dac_store: None,
            trust_captured_dacs: false,
            local_runtimes: false,
        }
    }
}

/// What the Job reads: the artifacts with URIs it can fetch (presigned `GET` URLs for S3, the
/// caller computes them; `file://` paths for volume storage) and the claim to mount for them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalysisInputs {
    pub artifacts: Vec<Artifact>,
    /// The PVC holding `file://` artifacts (the snapshot's `spec.volume`), mounted read-only at
    /// its path, where the artifacts' URIs point.
    pub volume: Option<SnapshotVolume>,
}

/// `dsnap-<snapshot>-analyze`, or, when that exceeds a label value's 63 characters (the Job
/// controller puts the name in the pod's `job-name` label), the snapshot name cut and a hash
/// of the whole name added so that two long names never share a Job.
pub fn job_name(snapshot: &str) -> String {
    suffixed_name(snapshot, "analyze")
}

/// `dsnap-<snapshot>-<suffix>` within 63 characters (see [`job_name`]).
pub fn suffixed_name(snapshot: &str, suffix: &str) -> String {
    let full = format!("dsnap-{snapshot}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex8(ring::digest::digest(&ring::digest::SHA256, snapshot.as_bytes()).as_ref());
    // 63 - "dsnap-" - "-" - 8 - "-<suffix>"
    let keep = (63 - 6 - 1 - 8 - 1 - suffix.len()).min(snapshot.len());
    let cut = snapshot[..keep].trim_end_matches(['-', '.']);
    format!("dsnap-{cut}-{hash}-{suffix}")
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The pod security of dumpwatch's Jobs (analysis and cleanup): the non-root analyzer user, its
/// group owning mounted volumes, the runtime's default seccomp profile.
pub(super) fn analyzer_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(ANALYZER_UID),
        run_as_group: Some(ANALYZER_UID),
        fs_group: Some(ANALYZER_UID),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The DAC store's volume source from its JSON (`DUMPWATCH_ANALYSIS_DAC_STORE_VOLUME`; empty or
/// `{}`: none). The name is set where it is mounted.
pub fn dac_store_volume(json: &str) -> Result<Option<Volume>, String> {
    let json = json.trim();
    if json.is_empty() || json == "{}" || json == "null" {
        return Ok(None);
    }
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the DAC store volume is not JSON: {e}"))?;
    let Some(obj) = value.as_object_mut() else { return Err("the DAC store volume must be a JSON object".into()) };
    obj.insert("name".into(), "dac-store".into());
    let volume: Volume =
        serde_json::from_value(value).map_err(|e| format!("the DAC store volume is not a volume source: {e}"))?;
    Ok(Some(volume))
}

/// Kubernetes expands `$(VAR)` in args; `$$` is a literal `$` (URLs may carry `$`).
fn literal(arg: String) -> String {
    arg.replace('$', "$$")
}

/// The Job for `snapshot`, under `policy`'s analysis limits.
pub fn analysis_job(
    snapshot: &DumpSnapshot,
    policy: Option<&DumpPolicy>,
    settings: &AnalysisSettings,
    inputs: &AnalysisInputs,
) -> Job {
    let analysis = policy.map(|p| p.spec.analysis.clone()).unwrap_or_default();
    let name = snapshot.name_any();
    let mut labels = BTreeMap::from([
        (SNAPSHOT_LABEL.to_string(), name.clone()),
        ("app.kubernetes.io/managed-by".to_string(), "dumpwatch-operator".to_string()),
        ("app.kubernetes.io/component".to_string(), "analyzer".to_string()),
    ]);
    if let Some(p) = &snapshot.spec.policy {
        labels.insert("dumpwatch.dev/policy".into(), p.clone());
    }
    let artifacts = serde_json::to_string(&inputs.artifacts).expect("artifacts serialize");
    let mut args = [
        "analyze",
        "--artifacts",
        &artifacts,
        "--json",
        "--report-to",
        &settings.operator_url,
        "--snapshot",
        &name,
        "--token-file",
        &format!("{TOKEN_DIR}/token"),
    ]
    .map(|a| literal(a.to_string()))
    .to_vec();
    if snapshot.spec.trigger == api::TriggerKind::Crash {
        // The runtime wrote the dump as it died: name the exception even without its crash
        // report (.NET Core 3.1 writes none).
        args.push("--crashed".into());
    }
    if !settings.local_runtimes {
        // The default image has no .NET runtime; one that turns up in it is no DAC source
        // anyone chose (the store is).
        args.push("--no-local-runtime".into());
    }
    if settings.dac_store.is_some() {
        args.extend(["--dac-store".to_string(), DAC_STORE_DIR.to_string()]);
    }
    if settings.trust_captured_dacs {
        args.push("--trust-dac-beside-dump".into());
    }

    let mut env = vec![
        // Also where downloaded DACs are cached (`<TMPDIR>/dumpwatch-dac`).
        EnvVar { name: "TMPDIR".into(), value: Some(SCRATCH_DIR.into()), ..Default::default() },
        // Set even when empty: empty tells the CLI not to download (its default is Microsoft's).
        EnvVar {
            name: "DUMPWATCH_SYMBOL_SERVER".into(),
            value: Some(settings.symbol_server.clone()),
            ..Default::default()
        },
        EnvVar { name: "DUMPWATCH_SNAPSHOT".into(), value: Some(name.clone()), ..Default::default() },
    ];
    if let Some(pem) = &settings.operator_ca_pem {
        env.push(EnvVar { name: "DUMPWATCH_OPERATOR_CA".into(), value: Some(pem.clone()), ..Default::default() });
    }

    let memory = Quantity(format!("{}", analysis.memory.value().round() as u64));
    let mut mounts = vec![
        VolumeMount {
            name: "dumpwatch-token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "scratch".into(), mount_path: SCRATCH_DIR.into(), ..Default::default() },
    ];
    let mut volumes = vec![
        Volume {
            name: "dumpwatch-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(ANALYZER_AUDIENCE.into()),
                        expiration_seconds: Some(3600),
                        path: "token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(settings.scratch_size.clone())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(SnapshotVolume { claim_name, path }) = &inputs.volume {
        mounts.push(VolumeMount {
            name: "artifacts".into(),
            mount_path: path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "artifacts".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
    }

    if let Some(store) = &settings.dac_store {
        mounts.push(VolumeMount {
            name: "dac-store".into(),
            mount_path: DAC_STORE_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume { name: "dac-store".into(), ..store.clone() });
    }

    let container = Container {
        name: "analyze".into(),
        image: Some(settings.image.clone()),
        args: Some(args),
        env: Some(env),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), memory.clone())])),
            requests: Some(BTreeMap::from([("memory".into(), memory), ("cpu".into(), Quantity("250m".into()))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name)),
            namespace: snapshot.namespace(),
            labels: Some(labels.clone()),
            owner_references: snapshot.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(analysis.deadline.std().as_secs().max(1) as i64),
            backoff_limit: Some(settings.backoff_limit.clamp(1, 2)),
            ttl_seconds_after_finished: Some(settings.ttl_after_finished_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(analyzer_pod_security()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A finished Job's outcome, from its conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Running,
    /// `Complete=True`, with the completion time when known.
    Succeeded(Option<k8s_openapi::jiff::Timestamp>),
    /// `Failed=True`: `"<reason>: <message>"` (e.g. `DeadlineExceeded: Job was active longer than specified deadline`).
    Failed(String),
}

pub fn job_outcome(job: &Job) -> JobOutcome {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let is_true = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if let Some(c) = is_true("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        return JobOutcome::Failed(match c.message.as_deref() {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason,
        });
    }
    if is_true("Complete").is_some() {
        return JobOutcome::Succeeded(status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0));
    }
    JobOutcome::Running
}

/// The artifacts the analyzer can work on (a dump or a heap snapshot; stacks were analyzed live).
pub fn analyzable(snapshot: &DumpSnapshot) -> bool {
    snapshot.spec.artifacts.iter().any(|a| matches!(a.kind, api::CaptureKind::Dump | api::CaptureKind::Gcdump))
}

/// The owner reference the Job must carry (for tests and for the controller's `owns`).
pub fn owner_uid(job: &Job) -> Option<&str> {
    job.metadata.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
