//! The `MutatingWebhookConfiguration` that routes pod creations to the operator, as a pure
//! builder (the chart templates the same object), and the `caBundle` update of an existing one.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

/// Default name of the configuration (`--webhook-config`).
pub const DEFAULT_CONFIGURATION_NAME: &str = "dumpwatch";
/// The webhook's name inside the configuration.
pub const WEBHOOK_NAME: &str = "inject.dumpwatch.dev";
pub const MUTATE_PATH: &str = "/mutate";
/// Namespaces opt in with this label, valued [`INJECT_LABEL_VALUE`].
pub const INJECT_LABEL: &str = "dumpwatch.dev/inject";
pub const INJECT_LABEL_VALUE: &str = "enabled";
/// `dumpwatch.dev/component=operator` on the operator's own pods: never sent to the webhook, so
/// the operator cannot block (or inject) itself even in an opted-in namespace.
pub const COMPONENT_LABEL: &str = "dumpwatch.dev/component";
/// Set on analysis Job pods (docs/operator.md): never injected.
pub const SNAPSHOT_LABEL: &str = "dumpwatch.dev/snapshot";
/// A pod opts out with `dumpwatch.dev/inject=disabled` (the namespace label's key, on the pod).
pub const POD_OPT_OUT_VALUE: &str = "disabled";

/// How the API server reaches the webhook in a cluster: the operator's Service.
pub fn service_client_config(service: &str, namespace: &str, port: i32) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: service.into(),
            namespace: namespace.into(),
            path: Some(MUTATE_PATH.into()),
            port: Some(port),
        }),
        ..Default::default()
    }
}

/// The configuration named `name` sending pod CREATEs of opted-in namespaces to `client_config`.
/// `failurePolicy: Ignore`: a webhook that is down or slow never blocks a pod (it is then
/// created without the sidecar).
pub fn mutating_webhook_configuration(name: &str, client_config: WebhookClientConfig) -> MutatingWebhookConfiguration {
    let not_in = |key: &str, value: &str| LabelSelectorRequirement {
        key: key.into(),
        operator: "NotIn".into(),
        values: Some(vec![value.into()]),
    };
    let absent =
        |key: &str| LabelSelectorRequirement { key: key.into(), operator: "DoesNotExist".into(), values: None };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".into(), "dumpwatch".into())])),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            // Another webhook may add containers after us: then we are asked again, and the
            // patch (idempotent) leaves an injected pod alone.
            reinvocation_policy: Some("IfNeeded".into()),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(INJECT_LABEL.into(), INJECT_LABEL_VALUE.into())])),
                ..Default::default()
            }),
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    not_in(COMPONENT_LABEL, "operator"),
                    absent(SNAPSHOT_LABEL),
                    not_in(INJECT_LABEL, POD_OPT_OUT_VALUE),
                ]),
                ..Default::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..Default::default()
        }]),
    }
}

/// The JSON patch setting every webhook's `caBundle` of `config` to `ca_pem`, or `None` when it
/// already is (so replicas that agree do not write). It first tests the resourceVersion: a
/// configuration changed meanwhile (webhooks reordered by a chart upgrade) makes it fail
/// instead of writing into the wrong place. A patch, not an update: the chart grants `patch`.
pub fn ca_bundle_patch(config: &MutatingWebhookConfiguration, ca_pem: &str) -> Option<json_patch::Patch> {
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let webhooks = config.webhooks.as_ref()?;
    if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle)) {
        return None;
    }
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": config.metadata.resource_version.clone().unwrap_or_default()
    })];
    for i in 0..webhooks.len() {
        ops.push(serde_json::json!({
            "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": serde_json::to_value(&bundle).expect("bytes serialize")
        }));
    }
    Some(serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed JSON patch"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_configuration_has_the_shape_the_chart_templates() {
        let config =
            mutating_webhook_configuration("dumpwatch", service_client_config("dumpwatch-operator", "dumpwatch", 8443));
        let value = serde_json::to_value(&config).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "dumpwatch", "labels": {"app.kubernetes.io/part-of": "dumpwatch"}},
                "webhooks": [{
                    "name": "inject.dumpwatch.dev",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"service": {"name": "dumpwatch-operator", "namespace": "dumpwatch", "path": "/mutate", "port": 8443}},
                    "failurePolicy": "Ignore",
                    "matchPolicy": "Equivalent",
                    "sideEffects": "None",
                    "timeoutSeconds": 5,
                    "reinvocationPolicy": "IfNeeded",
                    "namespaceSelector": {"matchLabels": {"dumpwatch.dev/inject": "enabled"}},
                    "objectSelector": {"matchExpressions": [
                        {"key": "dumpwatch.dev/component", "operator": "NotIn", "values": ["operator"]},
                        {"key": "dumpwatch.dev/snapshot", "operator": "DoesNotExist"},
                        {"key": "dumpwatch.dev/inject", "operator": "NotIn", "values": ["disabled"]}
                    ]},
                    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}]
                }]
            })
        );
    }

    #[test]
    fn the_ca_bundle_is_written_once_at_the_version_read() {
        let mut config = mutating_webhook_configuration("dumpwatch", service_client_config("op", "ns", 8443));
        config.metadata.resource_version = Some("42".into());
        let patch = ca_bundle_patch(&config, "PEM-A").expect("a bundle to set");
        let mut doc = serde_json::to_value(&config).unwrap();
        json_patch::patch(&mut doc, &patch.0).unwrap();
        let updated: MutatingWebhookConfiguration = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(updated.webhooks.as_ref().unwrap()[0].client_config.ca_bundle, Some(ByteString(b"PEM-A".to_vec())));
        assert_eq!(ca_bundle_patch(&updated, "PEM-A"), None, "already set: no write");
        assert!(ca_bundle_patch(&updated, "PEM-B").is_some(), "a new CA is written");
        assert_eq!(ca_bundle_patch(&MutatingWebhookConfiguration::default(), "PEM-A"), None);
        // Written over a configuration that changed since: the test op refuses it.
        doc["metadata"]["resourceVersion"] = json!("43");
        assert!(json_patch::patch(&mut doc, &ca_bundle_patch(&config, "PEM-B").unwrap().0).is_err());
    }
}
