//! The DumpPolicy controller on a real control plane with pods that really run: matched and
//! injected pods are counted, and pods that started without the sidecar after the policy was
//! created are reported as the webhook not injecting (`Injecting=False`, `WebhookNotInjecting`).

mod controller_support;

use std::time::Duration;

use api::DumpPolicy;
use controller_support::{client, eventually, run_controllers, start, stop};
use harness::Options;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use operator::controller::AnalysisSettings;

const NS: &str = "default";

fn pod(name: &str, app: &str, injected: bool) -> String {
    let (annotations, sidecar) = if injected {
        (
            "  annotations: {dumpwatch.dev/injected: orders}\n",
            "    - {name: dumpwatch-sidecar, image: none, command: [sleep, \"600\"]}\n",
        )
    } else {
        ("", "")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{app: {app}}}\n{annotations}\
         spec:\n  containers:\n    - {{name: app, image: none, command: [sleep, \"600\"]}}\n{sidecar}"
    )
}

fn condition(p: &DumpPolicy, type_: &str) -> Option<(String, String, String)> {
    let c = p.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_status_counts_real_pods_and_reports_a_webhook_that_does_not_inject() {
    let cp = start(Options::default()).await;
    cp.install_dumpwatch_crds().unwrap();
    let client = client(&cp).await;
    let (stop_controllers, _ctx, controllers) = run_controllers(client.clone(), AnalysisSettings::default());

    // A pod from before the policy, then the policy, then pods created while "the webhook" was
    // (one injected by hand, as the webhook would) and was not (the bare one).
    cp.apply(&pod("orders-old", "orders", false)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation times have one-second resolution
    cp.apply(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: orders, namespace: default}\n\
         spec: {selector: {matchLabels: {app: orders}}, triggers: [{type: deadlock}]}\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for manifest in
        [pod("orders-injected", "orders", true), pod("orders-bare", "orders", false), pod("billing", "billing", false)]
    {
        cp.apply(&manifest).unwrap();
    }

    let policies: Api<DumpPolicy> = Api::namespaced(client.clone(), NS);
    let policy = eventually("3 matched, 1 injected", Duration::from_secs(60), || async {
        let p = policies.get("orders").await.map_err(|e| e.to_string())?;
        let s = p.status.clone().unwrap_or_default();
        if (s.matched_pods, s.injected_pods) == (3, 1) { Ok(p) } else { Err(format!("{s:?}")) }
    })
    .await;
    let (status, reason, message) = condition(&policy, "Injecting").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "WebhookNotInjecting"));
    assert!(message.starts_with("1 of 3 matched pods started without the dumpwatch sidecar"), "{message}");
    assert!(
        message.contains("(orders-bare)"),
        "only the pod created after the policy is blamed on the webhook: {message}"
    );
    assert_eq!(condition(&policy, "Ready").unwrap().0, "False");
    assert_eq!(policy.status.as_ref().unwrap().observed_generation, policy.metadata.generation);

    // The bare pod goes: what remains without the sidecar predates the policy.
    Api::<Pod>::namespaced(client.clone(), NS).delete("orders-bare", &DeleteParams::default()).await.unwrap();
    let policy = eventually("the bare pod is gone from the status", Duration::from_secs(60), || async {
        let p = policies.get("orders").await.map_err(|e| e.to_string())?;
        match condition(&p, "Injecting") {
            Some((_, reason, _)) if reason == "PodsPredatePolicy" => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let s = policy.status.unwrap();
    assert_eq!((s.matched_pods, s.injected_pods), (2, 1));

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}

/// An operator rolled back behind its CRDs: the API server defaults fields this version does not
/// know into every policy. The policy must still be read (typed GET, the controllers' cache) and
/// get its status; an operator that refused unknown fields read no policy at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_with_fields_of_a_newer_crd_are_read_and_get_their_status() {
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    // "A newer version" of the CRD: a new defaulted section and a new defaulted capture field.
    let spec = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties";
    let patch = serde_json::json!([
        {"op": "add", "path": format!("{spec}/futureSection"),
         "value": {"type": "object", "default": {}, "properties": {"mode": {"type": "string", "default": "fast"}}}},
        {"op": "add", "path": format!("{spec}/capture/properties/futureLimit"),
         "value": {"type": "integer", "default": 7}},
    ]);
    cp.kubectl(&["patch", "crd", "dumppolicies.dumpwatch.dev", "--type=json", "-p", &patch.to_string()]).unwrap();
    let client = client(&cp).await;
    let policies: Api<DumpPolicy> = Api::namespaced(client.clone(), NS);
    // The API server takes the new schema a moment later: recreate until the default shows.
    eventually("the policy carries the newer CRD's defaults", Duration::from_secs(30), || async {
        let _ = cp.kubectl(&["delete", "dumppolicy", "future", "-n", NS, "--ignore-not-found"]);
        cp.apply(
            "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: future, namespace: default}\n\
             spec: {selector: {matchLabels: {app: orders}}, triggers: [{type: deadlock}], capture: {kinds: [dump]}}\n",
        )
        .map_err(|e| e.to_string())?;
        let raw = cp.kubectl_json(&["get", "dumppolicy", "future", "-n", NS]).map_err(|e| e.to_string())?;
        let spec = &raw["spec"];
        if spec["futureSection"]["mode"] == "fast" && spec["capture"]["futureLimit"] == 7 {
            Ok(())
        } else {
            Err(format!("not defaulted yet: {spec}"))
        }
    })
    .await;

    let typed = policies.get("future").await.expect("a typed read of a newer policy");
    assert_eq!(typed.spec.triggers.len(), 1);
    let (stop_controllers, _ctx, controllers) = run_controllers(client.clone(), AnalysisSettings::default());
    let policy = eventually("the controllers write its status", Duration::from_secs(60), || async {
        let p = policies.get("future").await.map_err(|e| e.to_string())?;
        if p.status.as_ref().is_some_and(|s| s.observed_generation == p.metadata.generation) {
            Ok(p)
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await;
    assert_eq!(policy.status.unwrap().matched_pods, 0);

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}
