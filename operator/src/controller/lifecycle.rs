//! What the controller does next for a `DumpSnapshot`, decided from the snapshot, its analysis
//! Job and its policy. The sidecar API moves `Requested → Capturing → Uploaded` and writes
//! findings (`Analyzing → Analyzed`); the controller starts the analysis, notices a failed or
//! silent Job, and publishes the outcome once (docs/operator.md, "DumpSnapshot lifecycle").

use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot, SnapshotPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;

use super::job::{JobOutcome, analyzable, job_name, job_outcome};

/// Condition type set once the outcome's Events were published.
pub const PUBLISHED: &str = "Published";
/// How long a Job that succeeded may take for its findings to arrive (the CLI posts them
/// before it exits, so this only covers a slow API write), and how far past the deadline a Job
/// that still runs is given up on (the Job controller normally fails it first).
pub const GRACE: Duration = Duration::from_secs(60);
/// How long a snapshot may stay `Requested` or `Capturing` (from its creation) before the
/// capture is given up: no sidecar picked the request up, or it never reported the capture.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do until something changes.
    Nothing,
    /// Create the analysis Job (unless it exists) and move to `Analyzing`.
    StartAnalysis,
    /// The Job runs (or just finished): look again after this long at the latest.
    Wait(Duration),
    /// Move to `Failed` with this message (the outcome is published on the next pass).
    Fail(String),
    /// Stay in this phase, with this status message saying why nothing happens.
    Hold(String),
    /// Send the outcome's Events, then set `Published`.
    Publish,
}

pub fn is_published(snapshot: &DumpSnapshot) -> bool {
    snapshot.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == PUBLISHED && c.status == "True"))
}

pub fn next_step(snapshot: &DumpSnapshot, job: Option<&Job>, policy: Option<&DumpPolicy>, now: Timestamp) -> Step {
    let status = snapshot.status.clone().unwrap_or_default();
    if snapshot.metadata.deletion_timestamp.is_some() {
        return Step::Nothing;
    }
    let analysis = policy.map(|p| p.spec.analysis.clone()).unwrap_or_default();
    match status.phase {
        SnapshotPhase::Requested | SnapshotPhase::Capturing => {
            let created = snapshot.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            let give_up = created + CAPTURE_TIMEOUT;
            if now < give_up {
                Step::Wait(until(now, give_up))
            } else if status.phase == SnapshotPhase::Requested {
                Step::Fail(format!(
                    "no sidecar took the capture request within {}s: is pod {} running with the dumpwatch sidecar?",
                    CAPTURE_TIMEOUT.as_secs(),
                    snapshot.spec.pod
                ))
            } else {
                Step::Fail(format!(
                    "the sidecar of pod {} took the capture request but reported no capture within {}s",
                    snapshot.spec.pod,
                    CAPTURE_TIMEOUT.as_secs()
                ))
            }
        }
        SnapshotPhase::Uploaded if analysis.enabled && analyzable(snapshot) => match out_of_a_jobs_reach(snapshot) {
            Some(why) => Step::Hold(why),
            None => Step::StartAnalysis,
        },
        SnapshotPhase::Uploaded => Step::Nothing,
        SnapshotPhase::Analyzed | SnapshotPhase::Failed if is_published(snapshot) => Step::Nothing,
        SnapshotPhase::Analyzed | SnapshotPhase::Failed => Step::Publish,
        SnapshotPhase::Analyzing => {
            let name =
                status.job.clone().unwrap_or_else(|| job_name(&snapshot.metadata.name.clone().unwrap_or_default()));
            let started = status.analysis_started.as_ref().map(|t| t.0).unwrap_or(now);
            let give_up = started + analysis.deadline.std() + GRACE;
            match job.map(job_outcome) {
                Some(JobOutcome::Failed(why)) => Step::Fail(format!("analysis Job {name} failed: {why}")),
                Some(JobOutcome::Succeeded(done)) => {
                    let waited_until = done.unwrap_or(now) + GRACE;
                    if now >= waited_until {
                        Step::Fail(format!("analysis Job {name} succeeded but reported no findings"))
                    } else {
                        Step::Wait(until(now, waited_until))
                    }
                }
                _ if now >= give_up => Step::Fail(format!(
                    "analysis Job {name} did not finish within the policy's deadline of {}",
                    analysis.deadline
                )),
                Some(JobOutcome::Running) => Step::Wait(until(now, give_up)),
                None => match out_of_a_jobs_reach(snapshot) {
                    Some(why) => Step::Fail(why),
                    // Deleted under us (by hand, or a restarted analysis): create it again.
                    None => Step::StartAnalysis,
                },
            }
        }
    }
}

/// Why an analysis Job cannot read the snapshot's artifacts, if it cannot: `file://` files that
/// are on no claim (`spec.volume`) are in the pod's own emptyDir, which no other pod can mount.
pub fn out_of_a_jobs_reach(snapshot: &DumpSnapshot) -> Option<String> {
    let on_pod_disk = snapshot.spec.artifacts.iter().any(|a| a.uri.starts_with("file://"));
    if !on_pod_disk || snapshot.spec.volume.is_some() {
        return None;
    }
    let policy = snapshot.spec.policy.as_deref().unwrap_or("<policy>");
    Some(format!(
        "not analyzed: the capture is kept in pod {}'s emptyDir, which an analysis Job cannot mount; \
         set storage.volume.claimName (a PersistentVolumeClaim in this namespace) or storage.s3 in DumpPolicy \
         {policy} to have captures analyzed (files in the emptyDir go with the pod)",
        snapshot.spec.pod
    ))
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    now.duration_until(then).try_into().unwrap_or(Duration::ZERO).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{policy, snapshot, ts};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn analyzing(started: i64) -> DumpSnapshot {
        let mut s = snapshot("orders-1", "Analyzing");
        let st = s.status.as_mut().unwrap();
        st.job = Some("dsnap-orders-1-analyze".into());
        st.analysis_started = Some(Time(ts(started)));
        s
    }

    fn job(condition: Option<(&str, &str, &str)>, completed: Option<i64>) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: condition.map(|(t, reason, message)| {
                    vec![JobCondition {
                        type_: t.into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                        ..Default::default()
                    }]
                }),
                completion_time: completed.map(|c| Time(ts(c))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn uploaded_snapshots_with_a_dump_are_analyzed() {
        let s = snapshot("orders-1", "Uploaded");
        assert_eq!(next_step(&s, None, Some(&policy()), ts(10)), Step::StartAnalysis);
        let mut off = policy();
        off.spec.analysis.enabled = false;
        assert_eq!(next_step(&s, None, Some(&off), ts(10)), Step::Nothing);
        let mut stacks_only = s.clone();
        stacks_only.spec.artifacts[0].kind = api::CaptureKind::Stacks;
        assert_eq!(next_step(&stacks_only, None, Some(&policy()), ts(10)), Step::Nothing);
    }

    #[test]
    fn files_in_the_pods_emptydir_are_not_given_to_a_job_and_the_status_says_why() {
        let mut s = snapshot("orders-1", "Uploaded");
        s.spec.volume = None;
        assert!(s.spec.artifacts[0].uri.starts_with("file://"));
        let Step::Hold(why) = next_step(&s, None, Some(&policy()), ts(10)) else { panic!() };
        assert!(why.contains("emptyDir") && why.contains("storage.volume.claimName"), "{why}");
        assert!(why.contains("pod orders-7c9") && why.contains("DumpPolicy orders"), "{why}");
        // Analyzing without its Job (an operator upgrade): failed, not re-created.
        let mut old = analyzing(0);
        old.spec.volume = None;
        assert_eq!(next_step(&old, None, Some(&policy()), ts(10)), Step::Fail(why));
        s.spec.volume = Some(api::SnapshotVolume { claim_name: "dumps".into(), path: "/dumps".into() });
        assert_eq!(next_step(&s, None, Some(&policy()), ts(10)), Step::StartAnalysis);
        s.spec.volume = None;
        s.spec.artifacts[0].uri = "s3://b/k".into();
        assert_eq!(next_step(&s, None, Some(&policy()), ts(10)), Step::StartAnalysis);
    }

    #[test]
    fn the_sidecar_moves_the_first_phases_within_the_capture_timeout() {
        for phase in ["Requested", "Capturing"] {
            // created at ts(0)
            assert_eq!(
                next_step(&snapshot("a", phase), None, Some(&policy()), ts(10)),
                Step::Wait(Duration::from_secs(590))
            );
        }
        let Step::Fail(requested) = next_step(&snapshot("a", "Requested"), None, None, ts(601)) else { panic!() };
        assert_eq!(
            requested,
            "no sidecar took the capture request within 600s: is pod orders-7c9 running with the dumpwatch sidecar?"
        );
        let Step::Fail(capturing) = next_step(&snapshot("a", "Capturing"), None, None, ts(601)) else { panic!() };
        assert!(capturing.contains("reported no capture"), "{capturing}");
    }

    #[test]
    fn a_failed_job_fails_the_snapshot_with_its_reason() {
        let j = job(Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")), None);
        assert_eq!(
            next_step(&analyzing(0), Some(&j), Some(&policy()), ts(30)),
            Step::Fail(
                "analysis Job dsnap-orders-1-analyze failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
                    .into()
            )
        );
    }

    #[test]
    fn a_running_job_is_waited_for_until_the_deadline() {
        let running = job(None, None);
        // deadline 5m + 60 s grace from ts(0)
        assert_eq!(
            next_step(&analyzing(0), Some(&running), Some(&policy()), ts(60)),
            Step::Wait(Duration::from_secs(300))
        );
        let late = next_step(&analyzing(0), Some(&running), Some(&policy()), ts(361));
        assert_eq!(
            late,
            Step::Fail("analysis Job dsnap-orders-1-analyze did not finish within the policy's deadline of 5m".into())
        );
    }

    #[test]
    fn a_job_that_succeeded_silently_fails_after_the_grace() {
        let done = job(Some(("Complete", "CompletionsReached", "")), Some(100));
        assert_eq!(
            next_step(&analyzing(0), Some(&done), Some(&policy()), ts(120)),
            Step::Wait(Duration::from_secs(40))
        );
        assert_eq!(
            next_step(&analyzing(0), Some(&done), Some(&policy()), ts(161)),
            Step::Fail("analysis Job dsnap-orders-1-analyze succeeded but reported no findings".into())
        );
    }

    #[test]
    fn a_missing_job_is_created_again_within_the_deadline() {
        assert_eq!(next_step(&analyzing(0), None, Some(&policy()), ts(10)), Step::StartAnalysis);
        assert!(matches!(next_step(&analyzing(0), None, Some(&policy()), ts(1000)), Step::Fail(_)));
    }

    #[test]
    fn outcomes_are_published_once() {
        let mut s = snapshot("orders-1", "Analyzed");
        assert_eq!(next_step(&s, None, None, ts(10)), Step::Publish);
        s.status.as_mut().unwrap().conditions.push(crate::controller::policy_status::condition(
            PUBLISHED,
            true,
            "EventsSent",
            String::new(),
        ));
        assert_eq!(next_step(&s, None, None, ts(10)), Step::Nothing);
        assert_eq!(next_step(&snapshot("orders-2", "Failed"), None, None, ts(10)), Step::Publish);
    }

    #[test]
    fn deleting_snapshots_are_left_to_the_finalizer() {
        let mut s = snapshot("orders-1", "Uploaded");
        s.metadata.deletion_timestamp = Some(Time(ts(5)));
        assert_eq!(next_step(&s, None, Some(&policy()), ts(10)), Step::Nothing);
    }
}
