use super::*;
use crate::controller::job::ANALYZER_UID;
use crate::controller::testing::snapshot;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

fn on_claim() -> DumpSnapshot {
    let mut s = snapshot("orders-1", "Analyzed");
    s.spec.volume = Some(SnapshotVolume { claim_name: "dumps".into(), path: "/dumpwatch-store".into() });
    s.spec.pod = "orders-7c9".into();
    s.spec.artifacts[0].uri = "file:///dumpwatch-store/shop/orders-7c9/c1/core.42.zst".into();
    let mut dac = s.spec.artifacts[0].clone();
    dac.uri = "file:///dumpwatch-store/shop/orders-7c9/c1/libmscordaccore.so.zst".into();
    s.spec.artifacts.push(dac);
    s
}

fn job_for(s: &DumpSnapshot) -> Job {
    let (volume, uris) = files_on_claim(s).unwrap();
    cleanup_job(s, volume, &uris, &AnalysisSettings::default())
}

fn with_condition(mut job: Job, type_: &str, reason: &str) -> Job {
    job.status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    job
}

#[test]
fn the_job_deletes_the_files_under_the_pods_directory_on_the_claim() {
    let job = job_for(&on_claim());
    assert_eq!(job.metadata.name.as_deref(), Some("dsnap-orders-1-cleanup"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("shop"));
    assert!(job.metadata.owner_references.is_none(), "not collected with the snapshot it cleans up after");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(2), Some(300)));
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(ANALYZER_UID));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/dumpwatch/dumpwatch:latest"));
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "delete-artifacts",
            "--under",
            "/dumpwatch-store/shop/orders-7c9",
            "file:///dumpwatch-store/shop/orders-7c9/c1/core.42.zst",
            "file:///dumpwatch-store/shop/orders-7c9/c1/libmscordaccore.so.zst"
        ]
    );
    let claim = pod.volumes.as_ref().unwrap()[0].persistent_volume_claim.as_ref().unwrap();
    assert_eq!((claim.claim_name.as_str(), claim.read_only), ("dumps", Some(false)));
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/dumpwatch-store", None));
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
}

#[test]
fn long_names_fit_and_differ_from_the_analysis_job() {
    let long = format!("{}-c1", "x".repeat(70));
    let name = cleanup_job_name(&long);
    assert!(name.len() <= 63 && name.ends_with("-cleanup"), "{name}");
    assert_ne!(name, crate::controller::job_name(&long));
    assert_ne!(cleanup_job_name(&format!("{}-c2", "x".repeat(70))), name);
}

#[test]
fn the_finalizer_waits_for_the_job_retries_a_failure_and_skips_emptydir_and_s3() {
    let s = on_claim();
    let CleanupStep::Create { volume, uris } = cleanup_step(&s, None) else { panic!("no Job yet: create it") };
    assert_eq!((volume, uris), files_on_claim(&s).unwrap(), "the Job is for the snapshot's files on its claim");
    let job = job_for(&s);
    assert_eq!(cleanup_step(&s, Some(&job)), CleanupStep::Wait);
    assert_eq!(
        cleanup_step(&s, Some(&with_condition(job.clone(), "Complete", "CompletionsReached"))),
        CleanupStep::Done
    );
    let CleanupStep::Retry(why) = cleanup_step(&s, Some(&with_condition(job, "Failed", "BackoffLimitExceeded"))) else {
        panic!()
    };
    assert!(why.starts_with("cleanup Job dsnap-orders-1-cleanup failed: BackoffLimitExceeded"), "{why}");

    let mut empty_dir = s.clone();
    empty_dir.spec.volume = None;
    assert_eq!(cleanup_step(&empty_dir, None), CleanupStep::Nothing, "gone with the pod");
    let mut s3 = s.clone();
    for a in &mut s3.spec.artifacts {
        a.uri = "s3://b/shop/orders-7c9/c1/core.42.zst".into();
    }
    assert_eq!(cleanup_step(&s3, None), CleanupStep::Nothing, "the operator deletes objects itself");
    let mut requested = s;
    requested.spec.artifacts.clear();
    assert_eq!(cleanup_step(&requested, None), CleanupStep::Nothing);
}
