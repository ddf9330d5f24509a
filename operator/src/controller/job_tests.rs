use super::*;
use crate::controller::testing::{policy, snapshot};

fn job() -> Job {
    let inputs = AnalysisInputs { artifacts: snapshot("orders-1", "Uploaded").spec.artifacts, volume: None };
    analysis_job(&snapshot("orders-1", "Uploaded"), Some(&policy()), &AnalysisSettings::default(), &inputs)
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn names_fit_a_label_value_and_stay_distinct() {
    assert_eq!(job_name("orders-1"), "dsnap-orders-1-analyze");
    let a = job_name(&format!("{}-a", "x".repeat(80)));
    let b = job_name(&format!("{}-b", "x".repeat(80)));
    assert!(a.len() <= 63 && b.len() <= 63, "{a}");
    assert_ne!(a, b);
    assert!(a.starts_with("dsnap-xxx") && a.ends_with("-analyze"), "{a}");
    // A cut that lands on a dash does not leave "--".
    let dashed = job_name(&format!("{}-{}", "y".repeat(39), "z".repeat(40)));
    assert!(!dashed.contains("--"), "{dashed}");
}

#[test]
fn the_job_belongs_to_the_snapshot_and_is_bounded() {
    let job = job();
    assert_eq!(job.metadata.name.as_deref(), Some("dsnap-orders-1-analyze"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(owner_uid(&job), Some("uid-orders-1"));
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DumpSnapshot", "orders-1"));
    assert_eq!(job.labels()[SNAPSHOT_LABEL], "orders-1");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(300), "the policy's analysis.deadline: 5m");
    assert_eq!(spec.backoff_limit, Some(1));
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    assert_eq!(spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()[SNAPSHOT_LABEL], "orders-1");
    let settings = AnalysisSettings { backoff_limit: 10, ..Default::default() };
    let many = analysis_job(&snapshot("orders-1", "Uploaded"), None, &settings, &AnalysisInputs::default());
    assert_eq!(many.spec.unwrap().backoff_limit, Some(2));
}

#[test]
fn the_pod_holds_no_cluster_credentials_and_runs_unprivileged() {
    let job = job();
    let pod = pod_spec(&job);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!((psc.run_as_non_root, psc.run_as_user), (Some(true), Some(ANALYZER_UID)));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"], Quantity("1073741824".into()));
    let token = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "dumpwatch-token").unwrap();
    let projection =
        token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0].service_account_token.as_ref().unwrap();
    assert_eq!(projection.audience.as_deref(), Some(ANALYZER_AUDIENCE));
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "dumpwatch-token").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (TOKEN_DIR, Some(true)));
}

#[test]
fn runs_dumpwatch_analyze_on_the_artifacts_and_reports_to_the_operator() {
    let job = job();
    let c = &pod_spec(&job).containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/dumpwatch/dumpwatch:latest"));
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "analyze");
    let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    let artifacts: Vec<Artifact> = serde_json::from_str(&at("--artifacts")).unwrap();
    assert_eq!(artifacts[0].uri, "file:///dumps/shop/orders-1/core.42.zst");
    assert_eq!(at("--report-to"), "https://dumpwatch-operator.dumpwatch.svc:8443");
    assert_eq!(at("--snapshot"), "orders-1");
    assert_eq!(at("--token-file"), "/var/run/secrets/dumpwatch.dev/token");
    assert!(args.contains(&"--json".to_string()));
}

#[test]
fn a_crash_snapshot_is_analyzed_as_a_crash() {
    let args = |trigger: api::TriggerKind| {
        let mut s = snapshot("orders-1", "Uploaded");
        s.spec.trigger = trigger;
        let job = analysis_job(&s, None, &AnalysisSettings::default(), &AnalysisInputs::default());
        pod_spec(&job).containers[0].args.clone().unwrap()
    };
    assert!(args(api::TriggerKind::Crash).contains(&"--crashed".to_string()));
    assert!(!args(api::TriggerKind::Deadlock).contains(&"--crashed".to_string()));
}

#[test]
fn dollar_signs_in_urls_survive_kubernetes_expansion() {
    let mut inputs = AnalysisInputs::default();
    let mut a = snapshot("orders-1", "Uploaded").spec.artifacts[0].clone();
    a.uri = "https://s3/x?sig=a$(b)".into();
    inputs.artifacts.push(a);
    let job = analysis_job(&snapshot("orders-1", "Uploaded"), None, &AnalysisSettings::default(), &inputs);
    let args = pod_spec(&job).containers[0].args.clone().unwrap();
    assert!(args[2].contains("a$$(b)"), "{}", args[2]);
}

#[test]
fn volume_artifacts_are_mounted_read_only() {
    let volume = SnapshotVolume { claim_name: "dumps".into(), path: "/dumps".into() };
    let inputs = AnalysisInputs { artifacts: vec![], volume: Some(volume) };
    let job = analysis_job(&snapshot("orders-1", "Uploaded"), None, &AnalysisSettings::default(), &inputs);
    let pod = pod_spec(&job);
    let v = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "artifacts").unwrap();
    assert_eq!(v.persistent_volume_claim.as_ref().unwrap().claim_name, "dumps");
    let m = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "artifacts").unwrap();
    assert_eq!((m.mount_path.as_str(), m.read_only), ("/dumps", Some(true)));
}

#[test]
fn outcome_comes_from_the_job_conditions() {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    let mut job = job();
    assert_eq!(job_outcome(&job), JobOutcome::Running);
    job.status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("DeadlineExceeded".into()),
            message: Some("Job was active longer than specified deadline".into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    assert_eq!(
        job_outcome(&job),
        JobOutcome::Failed("DeadlineExceeded: Job was active longer than specified deadline".into())
    );
}

#[test]
fn the_cli_gets_the_symbol_servers_and_empty_means_none() {
    let env_of = |job: &Job, name: &str| {
        pod_spec(job).containers[0].env.as_ref().unwrap().iter().find(|e| e.name == name).and_then(|e| e.value.clone())
    };
    assert_eq!(env_of(&job(), "DUMPWATCH_SYMBOL_SERVER").as_deref(), Some(MICROSOFT_SYMBOL_SERVER));
    assert_eq!(env_of(&job(), "TMPDIR").as_deref(), Some(SCRATCH_DIR), "the DAC cache is on the scratch volume");
    let settings = AnalysisSettings { symbol_server: String::new(), ..Default::default() };
    let off = analysis_job(&snapshot("orders-1", "Uploaded"), None, &settings, &AnalysisInputs::default());
    assert_eq!(env_of(&off, "DUMPWATCH_SYMBOL_SERVER").as_deref(), Some(""), "set, empty: no download");
}

#[test]
fn the_job_trusts_only_the_admins_dac_sources_unless_told_to_trust_the_app_pods() {
    let args = |job: &Job| pod_spec(job).containers[0].args.clone().unwrap();
    let plain = job();
    assert!(args(&plain).contains(&"--no-local-runtime".to_string()), "the image's leftovers are no DAC source");
    assert!(!args(&plain).contains(&"--trust-dac-beside-dump".to_string()), "captured DACs are not trusted");
    assert!(!args(&plain).contains(&"--dac-store".to_string()));

    let store = dac_store_volume(r#"{"persistentVolumeClaim":{"claimName":"dacs","readOnly":true}}"#).unwrap();
    assert_eq!(dac_store_volume("").unwrap(), None);
    assert_eq!(dac_store_volume("{}").unwrap(), None);
    assert!(dac_store_volume("[1]").is_err());
    let settings = AnalysisSettings { dac_store: store, trust_captured_dacs: true, ..Default::default() };
    let j = analysis_job(&snapshot("orders-1", "Uploaded"), None, &settings, &AnalysisInputs::default());
    let a = args(&j);
    let at = a.iter().position(|x| x == "--dac-store").expect("--dac-store");
    assert_eq!(a[at + 1], DAC_STORE_DIR);
    assert!(a.contains(&"--trust-dac-beside-dump".to_string()));
    let images = AnalysisSettings { local_runtimes: true, ..Default::default() };
    let with_runtimes = analysis_job(&snapshot("orders-1", "Uploaded"), None, &images, &AnalysisInputs::default());
    assert!(!args(&with_runtimes).contains(&"--no-local-runtime".to_string()), "an image with runtimes on purpose");
    let spec = pod_spec(&j);
    let mount = spec.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "dac-store").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), (DAC_STORE_DIR, Some(true)));
    let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "dac-store").unwrap();
    assert_eq!(vol.persistent_volume_claim.as_ref().unwrap().claim_name, "dacs");
}

#[test]
fn a_job_trusts_the_ca_served_when_it_is_created_not_the_one_read_at_start() {
    use crate::webhook::{CertSource, certs};
    let now = time::OffsetDateTime::now_utc();
    let started = AnalysisSettings { operator_ca_pem: Some("CA read at start".into()), ..AnalysisSettings::default() };
    let source = CertSource::empty();
    assert_eq!(super::super::with_current_ca(&started, Some(&source)), started, "nothing served yet: keep it");
    assert_eq!(super::super::with_current_ca(&started, None), started);
    // cert-manager renewed the chain under another CA; the files were reloaded.
    let ca = certs::generate_ca(now).unwrap();
    let serving =
        certs::issue_serving(&ca, &["dumpwatch-operator.dumpwatch.svc".into()], now, time::Duration::hours(1)).unwrap();
    source.set(&serving, &ca.cert).unwrap();
    let now_settings = super::super::with_current_ca(&started, Some(&source));
    assert_eq!(now_settings.operator_ca_pem.as_deref(), Some(ca.cert.as_str()));
    let job = analysis_job(&snapshot("orders-1", "Uploaded"), None, &now_settings, &AnalysisInputs::default());
    let env = job.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "DUMPWATCH_OPERATOR_CA" && e.value.as_deref() == Some(ca.cert.as_str())));
}
