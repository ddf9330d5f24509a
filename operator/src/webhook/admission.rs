//! The webhook's answer to an AdmissionReview, as pure functions. The rule: never deny a pod.
//! Whatever goes wrong (a body we cannot read, a pod we cannot patch) the answer is "allowed,
//! unchanged", with a warning the client sees and a log line for the operator.

use std::sync::Arc;

use api::DumpPolicy;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::inject::{
    SidecarSettings, injection_patch, is_injected, refusal, selects, sidecar_user, store_path_conflict,
    volume_conflicts, watched_containers,
};

/// What the webhook decided for one request (for the response and the log line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub patch: Option<json_patch::Patch>,
    /// The policy whose sidecar is injected.
    pub policy: Option<String>,
    /// Told to the client (kubectl prints them) and logged.
    pub warnings: Vec<String>,
}

/// Decides for one request, given the DumpPolicies of the request's namespace.
pub fn decide(req: &AdmissionRequest<Pod>, policies: &[Arc<DumpPolicy>], sidecar: &SidecarSettings) -> Decision {
    let mut decision = Decision::default();
    // The configuration only sends pod CREATEs; anything else passes untouched.
    if req.operation != Operation::Create || req.kind.kind != "Pod" || req.sub_resource.is_some() {
        return decision;
    }
    let Some(pod) = req.object.as_ref() else {
        decision.warnings.push("dumpwatch: the admission request carries no pod; not injected".into());
        return decision;
    };
    let matching = selecting_policies(pod, policies);
    let Some(chosen) = matching.first() else { return decision };
    let name = |p: &DumpPolicy| p.metadata.name.clone().unwrap_or_default();
    if matching.len() > 1 {
        let all: Vec<String> = matching.iter().map(|p| name(p)).collect();
        decision.warnings.push(format!(
            "dumpwatch: {} DumpPolicies select this pod ({}); using {}, the oldest",
            matching.len(),
            all.join(", "),
            name(chosen)
        ));
    }
    if is_injected(pod) {
        return decision;
    }
    if let Some(why) = refusal(pod, sidecar) {
        decision.warnings.push(format!("dumpwatch: not injected, {why} (DumpPolicy {})", name(chosen)));
        return decision;
    }
    let conflicts = volume_conflicts(pod);
    if !conflicts.is_empty() {
        decision.warnings.push(format!(
            "dumpwatch: not injected, the pod already has a volume named {} (DumpPolicy {})",
            conflicts.join(" and "),
            name(chosen)
        ));
        return decision;
    }
    if let Some(why) = store_path_conflict(chosen, sidecar) {
        decision.warnings.push(format!("dumpwatch: not injected, DumpPolicy {}: {why}", name(chosen)));
        return decision;
    }
    decision.patch = injection_patch(pod, chosen, sidecar);
    decision.policy = decision.patch.as_ref().map(|_| name(chosen));
    if decision.patch.is_some() {
        let watched = watched_containers(pod, chosen);
        if let Some(warning) = sidecar_user(pod, &watched, sidecar.run_as_user).warning {
            decision.warnings.push(format!("dumpwatch: {warning}"));
        }
    }
    decision
}

/// The policies that select `pod`, the one to use first: the oldest, then by name (so every
/// replica picks the same one). Policies being deleted are skipped.
pub fn selecting_policies<'a>(pod: &Pod, policies: &'a [Arc<DumpPolicy>]) -> Vec<&'a DumpPolicy> {
    let mut matching: Vec<&DumpPolicy> = policies
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none() && selects(p, pod))
        .collect();
    matching.sort_by(|a, b| {
        let key = |p: &DumpPolicy| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.metadata.name.clone());
        let (ka, kb) = (key(a), key(b));
        // A policy without a timestamp (never stored) sorts last.
        (ka.0.is_none(), ka).cmp(&(kb.0.is_none(), kb))
    });
    matching
}

/// The namespace of the request (the pod of a CREATE often has none in its metadata yet).
pub fn namespace_of(req: &AdmissionRequest<Pod>) -> String {
    req.namespace.clone().or_else(|| req.object.as_ref().and_then(|p| p.metadata.namespace.clone())).unwrap_or_default()
}

/// What [`review`] answers, and what it logs.
#[derive(Debug)]
pub struct Reviewed {
    /// The AdmissionReview to send back (JSON), or `None` when the body is not an
    /// AdmissionReview at all (answered 400: the API server then applies `failurePolicy: Ignore`).
    pub body: Option<Value>,
    pub uid: String,
    pub namespace: String,
    pub pod: String,
    pub decision: Decision,
}

/// Reads an AdmissionReview body and answers it. `policies_in(namespace)` gives the
/// DumpPolicies of a namespace (from the reflector's cache).
pub fn review(body: &[u8], policies_in: impl Fn(&str) -> Vec<Arc<DumpPolicy>>, sidecar: &SidecarSettings) -> Reviewed {
    let mut reviewed = Reviewed {
        body: None,
        uid: String::new(),
        namespace: String::new(),
        pod: String::new(),
        decision: Decision::default(),
    };
    let typed: Result<AdmissionReview<Pod>, _> = serde_json::from_slice(body);
    let req: AdmissionRequest<Pod> = match typed.map(|r| r.try_into()) {
        Ok(Ok(req)) => req,
        other => {
            // Still answer the request when its uid can be read: allowed, unchanged.
            let reason = match other {
                Err(e) => e.to_string(),
                _ => "no request in the AdmissionReview".into(),
            };
            let raw: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let uid = raw.pointer("/request/uid").and_then(Value::as_str);
            let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or("admission.k8s.io/v1");
            reviewed.decision.warnings.push(format!("dumpwatch: unreadable admission request, not injected: {reason}"));
            if let Some(uid) = uid {
                reviewed.uid = uid.to_string();
                reviewed.body = Some(serde_json::json!({
                    "apiVersion": api_version,
                    "kind": "AdmissionReview",
                    "response": {"uid": uid, "allowed": true, "warnings": reviewed.decision.warnings},
                }));
            }
            return reviewed;
        }
    };
    reviewed.uid = req.uid.clone();
    reviewed.namespace = namespace_of(&req);
    reviewed.pod = req
        .object
        .as_ref()
        .and_then(|p| p.metadata.name.clone().or(p.metadata.generate_name.clone()))
        .unwrap_or_default();
    let policies = policies_in(&reviewed.namespace);
    reviewed.decision = decide(&req, &policies, sidecar);
    reviewed.body = Some(respond(&req, &mut reviewed.decision));
    reviewed
}

/// The AdmissionReview answering `req` with `decision` (always allowed).
pub fn respond(req: &AdmissionRequest<Pod>, decision: &mut Decision) -> Value {
    let mut response = AdmissionResponse::from(req);
    if let Some(patch) = decision.patch.clone() {
        match response.clone().with_patch(patch) {
            Ok(patched) => response = patched,
            Err(e) => {
                decision.patch = None;
                decision.policy = None;
                decision.warnings.push(format!("dumpwatch: not injected, the patch did not serialize: {e}"));
            }
        }
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings.clone());
    }
    serde_json::to_value(response.into_review()).expect("an AdmissionReview serializes")
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
