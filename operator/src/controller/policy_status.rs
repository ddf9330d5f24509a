//! `DumpPolicy` status as a pure function of the policy, the pods of its namespace and its
//! snapshots. The one thing an operator cannot see from inside the webhook is that the webhook
//! is *not* being called (down, unreachable, namespace not opted in): that shows here, as
//! matched pods without the sidecar that were created after the policy.

use std::borrow::Borrow;

use api::{DumpPolicy, DumpPolicyStatus, DumpSnapshot};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::{INJECTED_ANNOTATION, SIDECAR_NAME};

/// How many pod names a condition message lists before "and N more".
const NAMES_IN_MESSAGE: usize = 3;

/// The policy's selector matches the pod (same namespace; an empty selector matches every pod,
/// as the webhook's `injection_patch` does).
pub fn selects(policy: &DumpPolicy, pod: &Pod) -> bool {
    selects_meta(policy, &pod.metadata)
}

/// [`selects`] from the pod's metadata alone (what the metadata-only cache holds), copying
/// nothing: every pod event and every reconcile asks it of many pods.
pub fn selects_meta(policy: &DumpPolicy, pod: &ObjectMeta) -> bool {
    let labels = pod.labels.as_ref();
    pod.namespace == policy.metadata.namespace
        && policy.spec.selector.match_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod carries the sidecar (the webhook's annotation or the container itself).
pub fn is_injected(pod: &Pod) -> bool {
    pod.annotations().contains_key(INJECTED_ANNOTATION)
        || pod.spec.as_ref().is_some_and(|s| s.containers.iter().any(|c| c.name == SIDECAR_NAME))
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The status the policy should have. `pods` may hold any pods (they are filtered by namespace
/// and selector); `snapshots` those whose `spec.policy` names this policy (others are ignored).
pub fn policy_status<P: Borrow<Pod>>(
    policy: &DumpPolicy,
    pods: &[P],
    snapshots: &[DumpSnapshot],
    now: Timestamp,
) -> DumpPolicyStatus {
    let matched: Vec<&Pod> = pods.iter().map(|p| p.borrow()).filter(|p| is_running(p) && selects(policy, p)).collect();
    let bare: Vec<&Pod> = matched.iter().copied().filter(|p| !is_injected(p)).collect();
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let policy_created = policy.metadata.creation_timestamp.as_ref().map(|t| t.0);
    // A pod created before the policy existed could not have been injected: only pods created
    // since say something about the webhook.
    let missed: Vec<&Pod> = bare.iter().copied().filter(|p| created(p) >= policy_created).collect();

    let name = policy.name_any();
    let last_capture = snapshots
        .iter()
        .filter(|s| s.spec.policy.as_deref() == Some(name.as_str()) && !s.spec.artifacts.is_empty())
        .filter_map(|s| s.metadata.creation_timestamp.clone())
        .max_by_key(|t| t.0);

    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let injecting = if !missed.is_empty() {
        condition(
            "Injecting",
            false,
            "WebhookNotInjecting",
            format!(
                "{} of {} matched pods started without the dumpwatch sidecar after this policy was created ({}): \
                 the admission webhook did not inject them. Check that the namespace has the label \
                 dumpwatch.dev/inject=enabled and that the operator's webhook is reachable, then restart those pods.",
                missed.len(),
                matched.len(),
                names(&missed)
            ),
        )
    } else if !bare.is_empty() {
        condition(
            "Injecting",
            false,
            "PodsPredatePolicy",
            format!(
                "{} matched pods were created before this policy and run without the sidecar ({}): restart them to inject it.",
                bare.len(),
                names(&bare)
            ),
        )
    } else {
        condition(
            "Injecting",
            true,
            "AllMatchedPodsInjected",
            format!("{} matched pods carry the sidecar", matched.len()),
        )
    };
    // Injected, but the sidecar runs as the default user: the pod spec does not name the app's
    // user, and the runtime's diagnostic socket and files are that user's own.
    let unreachable: Vec<&Pod> =
        matched.iter().copied().filter(|p| is_injected(p) && crate::inject::runs_as_default_user(p)).collect();
    let ready = if matched.is_empty() {
        condition("Ready", true, "NoMatchingPods", "no running pod matches the selector yet".into())
    } else if bare.is_empty() && !unreachable.is_empty() {
        condition(
            "Ready",
            false,
            "AppUserNotInPodSpec",
            format!(
                "{} of {} matched pods do not say which user the app runs as ({}): their sidecar runs as its default \
                 user and cannot reach a .NET runtime of another user. Set securityContext.runAsUser on the pod or \
                 the app container (the image's user), then restart them.",
                unreachable.len(),
                matched.len(),
                names(&unreachable)
            ),
        )
    } else if bare.is_empty() {
        condition("Ready", true, "Watching", format!("watching {} pods", matched.len()))
    } else {
        condition(
            "Ready",
            false,
            "PodsWithoutSidecar",
            format!("{} of {} matched pods are not watched (see Injecting)", bare.len(), matched.len()),
        )
    };
    let conditions = [ready, injecting]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            keep_transition_time(c, &old.conditions, now)
        })
        .collect();

    DumpPolicyStatus {
        matched_pods: matched.len() as u32,
        injected_pods: (matched.len() - bare.len()) as u32,
        last_capture,
        conditions,
        observed_generation: generation,
    }
}

/// When the webhook left pods bare because the policy's claim path collides with the sidecar's
/// own mounts (`sidecar_mount_path`), the `Injecting` condition says that instead of pointing at
/// the namespace label or the webhook's reachability.
pub fn explain_storage_conflict(
    mut status: DumpPolicyStatus,
    policy: &DumpPolicy,
    sidecar_mount_path: &str,
) -> DumpPolicyStatus {
    let settings = crate::inject::SidecarSettings { mount_path: sidecar_mount_path.into(), ..Default::default() };
    let Some(why) = crate::inject::store_path_conflict(policy, &settings) else { return status };
    for c in status.conditions.iter_mut().filter(|c| c.type_ == "Injecting" && c.reason == "WebhookNotInjecting") {
        c.reason = "StoragePathConflict".into();
        c.message = format!("the webhook does not inject pods of this policy: {why}");
    }
    status
}

/// A policy that breaks a rule, or names a store it may not use, is not Ready, whatever its pods:
/// its sidecars would only retry, so the condition says what to change (`problems` in words).
pub fn explain_invalid(
    mut status: DumpPolicyStatus,
    policy: &DumpPolicy,
    problems: &[String],
    now: Timestamp,
) -> DumpPolicyStatus {
    if problems.is_empty() {
        return status;
    }
    let old = policy.status.clone().unwrap_or_default();
    let mut ready =
        condition("Ready", false, "InvalidPolicy", format!("the policy is invalid: {}", problems.join("; ")));
    ready.observed_generation = policy.metadata.generation;
    let ready = keep_transition_time(ready, &old.conditions, now);
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.insert(0, ready);
    status
}

fn names(pods: &[&Pod]) -> String {
    let mut out: Vec<String> = pods.iter().take(NAMES_IN_MESSAGE).map(|p| p.name_any()).collect();
    if pods.len() > NAMES_IN_MESSAGE {
        out.push(format!("and {} more", pods.len() - NAMES_IN_MESSAGE));
    }
    out.join(", ")
}

/// A condition with an unset transition time (filled in by [`keep_transition_time`]).
pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// `lastTransitionTime` changes only when the status does (Kubernetes convention): otherwise
/// every reconcile would rewrite the status and wake every watcher.
pub fn keep_transition_time(mut c: Condition, old: &[Condition], now: Timestamp) -> Condition {
    c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
        Some(o) if o.status == c.status => o.last_transition_time.clone(),
        _ => Time(now),
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy() -> DumpPolicy {
        let mut p = DumpPolicy::new(
            "orders",
            api::DumpPolicySpec::from_yaml("selector: {matchLabels: {app: orders}}").unwrap(),
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.generation = Some(3);
        p.metadata.creation_timestamp = Some(Time(ts(100)));
        p
    }

    fn pod(name: &str, app: &str, created: i64, phase: &str, injected: bool) -> Pod {
        let mut containers = vec![Container { name: "app".into(), ..Default::default() }];
        if injected {
            containers.push(Container { name: SIDECAR_NAME.into(), ..Default::default() });
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec { containers, ..Default::default() }),
            status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }),
        }
    }

    fn snapshot(name: &str, policy: &str, created: i64, with_artifacts: bool) -> DumpSnapshot {
        let mut s = DumpSnapshot::new(
            name,
            api::DumpSnapshotSpec {
                policy: Some(policy.into()),
                pod: "orders-1".into(),
                container: None,
                pid: None,
                runtime_version: None,
                trigger: api::TriggerKind::Deadlock,
                observed: None,
                artifacts: vec![],
                volume: None,
                store: None,
            },
        );
        if with_artifacts {
            s.spec.artifacts.push(api::Artifact {
                kind: api::CaptureKind::Dump,
                uri: "file:///d/core.zst".into(),
                size: 1,
                sha256: "0".repeat(64),
            });
        }
        s.metadata.creation_timestamp = Some(Time(ts(created)));
        s
    }

    fn cond<'a>(s: &'a DumpPolicyStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn counts_running_matched_and_injected_pods() {
        let pods = [
            pod("orders-1", "orders", 200, "Running", true),
            pod("orders-2", "orders", 200, "Running", true),
            pod("orders-pending", "orders", 200, "Pending", true),
            pod("billing-1", "billing", 200, "Running", false),
        ];
        let snaps =
            [snapshot("a", "orders", 300, true), snapshot("b", "orders", 400, true), snapshot("c", "other", 900, true)];
        let s = policy_status(&policy(), &pods, &snaps, ts(1000));
        assert_eq!((s.matched_pods, s.injected_pods), (2, 2));
        assert_eq!(s.last_capture, Some(Time(ts(400))));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Injecting").reason, "AllMatchedPodsInjected");
        assert_eq!(cond(&s, "Ready").observed_generation, Some(3));
    }

    #[test]
    fn injected_pods_whose_sidecar_runs_as_a_default_user_are_not_ready() {
        let with_user = |name: &str, from_spec: bool| {
            let mut p = pod(name, "orders", 200, "Running", true);
            let user = {
                let uid = if from_spec { 1000 } else { 65532 };
                crate::inject::SidecarUser { uid, gid: uid, from_spec, warning: None }
            };
            p.metadata.annotations =
                Some([(crate::inject::SIDECAR_USER_ANNOTATION.to_string(), user.annotation())].into());
            p
        };
        let s = policy_status(&policy(), &[with_user("orders-1", true), with_user("orders-2", false)], &[], ts(1000));
        assert_eq!((s.matched_pods, s.injected_pods), (2, 2));
        let c = cond(&s, "Ready");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "AppUserNotInPodSpec"));
        assert!(c.message.contains("1 of 2") && c.message.contains("orders-2") && c.message.contains("runAsUser"));
        assert_eq!(cond(&s, "Injecting").status, "True", "they are injected");
        let s = policy_status(&policy(), &[with_user("orders-1", true)], &[], ts(1000));
        assert_eq!(cond(&s, "Ready").reason, "Watching");
    }

    #[test]
    fn pods_created_without_the_sidecar_after_the_policy_mean_the_webhook_is_not_injecting() {
        let pods = [pod("orders-1", "orders", 200, "Running", true), pod("orders-2", "orders", 300, "Running", false)];
        let s = policy_status(&policy(), &pods, &[], ts(1000));
        assert_eq!((s.matched_pods, s.injected_pods), (2, 1));
        let c = cond(&s, "Injecting");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "WebhookNotInjecting"));
        assert!(c.message.contains("1 of 2 matched pods") && c.message.contains("orders-2"), "{}", c.message);
        assert!(c.message.contains("dumpwatch.dev/inject=enabled"), "{}", c.message);
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(s.last_capture, None, "a request without artifacts is not a capture");
    }

    #[test]
    fn a_claim_path_colliding_with_the_sidecar_is_named_as_the_reason() {
        let pods = [pod("orders-2", "orders", 300, "Running", false)];
        let mut p = policy();
        p.spec.storage.volume = Some(api::VolumeStorage { path: "/dumpwatch".into(), claim_name: Some("d".into()) });
        let s = explain_storage_conflict(policy_status(&p, &pods, &[], ts(1000)), &p, "/dumpwatch");
        let c = cond(&s, "Injecting");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "StoragePathConflict"));
        assert!(c.message.contains("collides with the sidecar's capture dir"), "{}", c.message);
        // Another path, or the operator's sidecar mounted elsewhere: the usual reason stays.
        let s = explain_storage_conflict(policy_status(&p, &pods, &[], ts(1000)), &p, "/diag");
        assert_eq!(cond(&s, "Injecting").reason, "WebhookNotInjecting");
    }

    #[test]
    fn pods_older_than_the_policy_only_need_a_restart() {
        let pods = [pod("orders-old", "orders", 50, "Running", false)];
        let c = cond(&policy_status(&policy(), &pods, &[], ts(1000)), "Injecting").clone();
        assert_eq!(c.reason, "PodsPredatePolicy");
        assert!(c.message.contains("restart"), "{}", c.message);
    }

    #[test]
    fn injected_is_known_from_the_annotation_alone() {
        let mut p = pod("orders-1", "orders", 200, "Running", false);
        p.metadata.annotations = Some([(INJECTED_ANNOTATION.to_string(), "orders".to_string())].into());
        assert!(is_injected(&p));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let pods = [pod("orders-1", "orders", 200, "Running", true)];
        let mut p = policy();
        p.status = Some(policy_status(&p, &pods, &[], ts(1000)));
        let again = policy_status(&p, &pods, &[], ts(2000));
        assert_eq!(cond(&again, "Ready").last_transition_time, Time(ts(1000)));
        let bare = [pod("orders-1", "orders", 200, "Running", false)];
        let changed = policy_status(&p, &bare, &[], ts(3000));
        assert_eq!(cond(&changed, "Ready").last_transition_time, Time(ts(3000)));
    }

    #[test]
    fn an_invalid_policy_is_not_ready_and_says_why() {
        let p = policy();
        let s = policy_status(&p, &[pod("a", "orders", 2000, "Running", true)], &[], ts(3000));
        assert_eq!(cond(&s, "Ready").status, "True");
        let why = ["DumpStore team-b does not allow namespace shop".to_string()];
        let s = explain_invalid(s, &p, &why, ts(3000));
        let ready = cond(&s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidPolicy"));
        assert!(ready.message.contains("does not allow namespace shop"), "{}", ready.message);
        assert_eq!(s.conditions.iter().filter(|c| c.type_ == "Ready").count(), 1);
        assert_eq!(explain_invalid(s.clone(), &p, &[], ts(4000)), s, "a valid policy keeps its status");
    }

    #[test]
    fn many_pods_are_named_briefly() {
        let pods: Vec<Pod> = (0..7).map(|i| pod(&format!("orders-{i}"), "orders", 200, "Running", false)).collect();
        let c = cond(&policy_status(&policy(), &pods, &[], ts(1000)), "Injecting").clone();
        assert!(c.message.contains("orders-0, orders-1, orders-2, and 4 more"), "{}", c.message);
    }
}
