//! The decision on AdmissionReviews exactly as kube-apiserver 1.36 sent them (captured by
//! tests/webhook_apiserver.rs): `pod-create.json` is the first call for a pod created with
//! `kubectl apply`, `pod-create-reinvoked.json` the reinvocation on the pod we had patched.

use api::DumpPolicySpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

const CREATE: &[u8] = include_bytes!("testdata/pod-create.json");
const REINVOKED: &[u8] = include_bytes!("testdata/pod-create-reinvoked.json");

/// The uid of the captured request.
fn uid() -> String {
    let review: Value = serde_json::from_slice(CREATE).unwrap();
    review["request"]["uid"].as_str().unwrap().to_string()
}

fn policy(name: &str, created: i64, yaml: &str) -> Arc<DumpPolicy> {
    let mut p = DumpPolicy::new(name, DumpPolicySpec::from_yaml(yaml).unwrap());
    p.metadata.namespace = Some("shop".into());
    p.metadata.creation_timestamp =
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + created).unwrap()));
    Arc::new(p)
}

const ORDERS: &str = "selector: {matchLabels: {app: orders}}\nmode: listen";
const EVERY_POD: &str = "selector: {}\nmode: connect";

fn in_shop(policies: Vec<Arc<DumpPolicy>>) -> impl Fn(&str) -> Vec<Arc<DumpPolicy>> {
    move |ns| if ns == "shop" { policies.clone() } else { Vec::new() }
}

fn settings() -> SidecarSettings {
    SidecarSettings { operator_ca: "CA PEM".into(), ..SidecarSettings::default() }
}

/// The pod of a review with the response's patch applied, as the API server would.
fn patched_pod(request: &[u8], response: &Value) -> Pod {
    let review: Value = serde_json::from_slice(request).unwrap();
    let mut pod = review["request"]["object"].clone();
    // kube's AdmissionResponse writes the bytes as a JSON array of numbers, which the API
    // server's decoder accepts as well as base64 (tests/webhook_apiserver.rs shows it does).
    let patch: Vec<u8> = serde_json::from_value(response["response"]["patch"].clone()).expect("a patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut pod, &patch.0).unwrap();
    serde_json::from_value(pod).unwrap()
}

#[test]
fn a_selected_pod_is_answered_with_the_injection_patch() {
    let reviewed = review(CREATE, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    let body = reviewed.body.expect("an answer");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = &body["response"];
    assert_eq!(response["uid"].as_str(), Some(uid().as_str()), "the request's uid is echoed");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // The captured pod does not say which user it runs as: the client is told what that means.
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("does not say which user container api runs as"));
    assert_eq!((reviewed.namespace.as_str(), reviewed.pod.as_str()), ("shop", "orders-1"));
    assert_eq!(reviewed.decision.policy.as_deref(), Some("orders"));

    let pod = patched_pod(CREATE, &body);
    let names: Vec<&str> = pod.spec.as_ref().unwrap().containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["api", crate::SIDECAR_NAME]);
    let sidecar = &pod.spec.as_ref().unwrap().containers[1];
    let ca = sidecar.env.iter().flatten().find(|e| e.name == "DUMPWATCH_OPERATOR_CA").unwrap();
    assert_eq!(ca.value.as_deref(), Some("CA PEM"));
    // The API server's own projected volume (kube-api-access-*) is kept beside ours.
    let volumes: Vec<&str> = pod.spec.as_ref().unwrap().volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes.len(), 3, "{volumes:?}");
}

#[test]
fn the_reinvocation_on_the_patched_pod_adds_nothing() {
    let reviewed = review(REINVOKED, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    let response = &reviewed.body.unwrap()["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response.get("patch"), None);
    assert_eq!(reviewed.decision, Decision::default());
}

#[test]
fn no_policy_or_no_match_means_allowed_unchanged() {
    for policies in [vec![], vec![policy("billing", 0, "selector: {matchLabels: {app: billing}}")]] {
        let reviewed = review(CREATE, in_shop(policies), &settings());
        let response = &reviewed.body.unwrap()["response"];
        assert_eq!((response["allowed"].as_bool(), response.get("patch")), (Some(true), None));
    }
    // Policies of another namespace are not consulted.
    let other = |_: &str| Vec::new();
    assert_eq!(review(CREATE, other, &settings()).decision.patch, None);
}

#[test]
fn of_several_matching_policies_the_oldest_wins_and_the_client_is_warned() {
    let policies = vec![policy("zeta", 10, ORDERS), policy("catch-all", 20, EVERY_POD), policy("alpha", 10, ORDERS)];
    let reviewed = review(CREATE, in_shop(policies), &settings());
    assert_eq!(reviewed.decision.policy.as_deref(), Some("alpha"), "oldest, then by name");
    let body = reviewed.body.unwrap();
    let warnings = body["response"]["warnings"].as_array().unwrap();
    assert_eq!(
        warnings[0],
        "dumpwatch: 3 DumpPolicies select this pod (alpha, zeta, catch-all); using alpha, the oldest"
    );
    assert_eq!(patched_pod(CREATE, &body).metadata.annotations.unwrap()[crate::INJECTED_ANNOTATION], "alpha");
}

#[test]
fn a_policy_being_deleted_is_not_used() {
    let mut going = (*policy("old", 0, ORDERS)).clone();
    going.metadata.deletion_timestamp = going.metadata.creation_timestamp.clone();
    let reviewed = review(CREATE, in_shop(vec![Arc::new(going), policy("new", 5, ORDERS)]), &settings());
    assert_eq!(reviewed.decision.policy.as_deref(), Some("new"));
    assert!(
        !reviewed.decision.warnings.iter().any(|w| w.contains("select this pod")),
        "{:?}",
        reviewed.decision.warnings
    );
}

#[test]
fn a_dry_run_is_patched_like_the_real_thing() {
    let mut request: Value = serde_json::from_slice(CREATE).unwrap();
    request["request"]["dryRun"] = json!(true);
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    assert!(reviewed.decision.patch.is_some());
}

#[test]
fn other_operations_and_kinds_pass_untouched() {
    for (field, value) in [("operation", json!("UPDATE")), ("subResource", json!("ephemeralcontainers"))] {
        let mut request: Value = serde_json::from_slice(CREATE).unwrap();
        request["request"][field] = value.clone();
        let body = serde_json::to_vec(&request).unwrap();
        let reviewed = review(&body, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
        assert_eq!(reviewed.decision, Decision::default(), "{field} = {value}");
        assert_eq!(reviewed.body.unwrap()["response"]["allowed"], true);
    }
}

#[test]
fn a_pod_with_a_colliding_volume_is_allowed_with_a_warning() {
    let mut request: Value = serde_json::from_slice(CREATE).unwrap();
    request["request"]["object"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "dumpwatch", "emptyDir": {}}));
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    let response = &reviewed.body.unwrap()["response"];
    assert_eq!((response["allowed"].as_bool(), response.get("patch")), (Some(true), None));
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(warning.contains("already has a volume named dumpwatch"), "{warning}");
}

#[test]
fn an_unreadable_request_is_still_allowed_when_its_uid_can_be_read() {
    // A pod the typed model refuses (containers must be a list).
    let mut request: Value = serde_json::from_slice(CREATE).unwrap();
    request["request"]["object"]["spec"]["containers"] = json!("not a list");
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    let answer = reviewed.body.expect("answered");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"].as_str(), Some(uid().as_str()));
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["warnings"][0].as_str().unwrap().contains("unreadable admission request"));

    // Not JSON, or no request: nothing to answer (HTTP 400; failurePolicy Ignore admits the pod).
    for garbage in [&b"not json"[..], br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#] {
        let reviewed = review(garbage, in_shop(vec![]), &settings());
        assert!(reviewed.body.is_none());
        assert_eq!(reviewed.decision.patch, None);
        assert_eq!(reviewed.decision.warnings.len(), 1);
    }
}

#[test]
fn the_namespace_comes_from_the_request_when_the_pod_has_none() {
    let mut request: Value = serde_json::from_slice(CREATE).unwrap();
    request["request"]["object"]["metadata"].as_object_mut().unwrap().remove("namespace");
    request["request"]["object"]["metadata"].as_object_mut().unwrap().remove("name");
    request["request"]["object"]["metadata"]["generateName"] = json!("orders-7c9d-");
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, in_shop(vec![policy("orders", 0, ORDERS)]), &settings());
    assert_eq!((reviewed.namespace.as_str(), reviewed.pod.as_str()), ("shop", "orders-7c9d-"));
    assert!(reviewed.decision.patch.is_some());
}
