//! `DumpStore`: object storage an administrator owns (endpoint, bucket, credentials), cluster
//! scoped, that namespaced `DumpPolicy`s reference by name (`storage.s3.storeRef`). The same split
//! as cert-manager's `ClusterIssuer`: tenants choose a store, never an endpoint or a Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where captures of the policies that name this store go. Only the operator reads `secretRef`
/// and presigns URLs; app pods and tenants never see the credentials.
// clippy reads the repeated `type_ = ...` of the printcolumn(...) arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "dumpwatch.dev",
    version = "v1alpha1",
    kind = "DumpStore",
    doc = "Object storage for captures, owned by a cluster administrator and referenced by DumpPolicies by name.",
    shortname = "dstore",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.s3.endpoint"),
    printcolumn(name = "Bucket", type_ = "string", json_path = ".spec.s3.bucket"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DumpStoreSpec {
    pub s3: StoreS3,
    /// Namespaces whose policies may use this store, by their labels (e.g.
    /// `matchLabels: {kubernetes.io/metadata.name: shop}`). Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
}

/// An S3 bucket (AWS, MinIO, Ceph, ...). Captures are stored under
/// `<prefix>/<namespace>/<pod>/<capture>/<file>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.endpoint.startsWith('https://') || (has(self.insecure) && self.insecure)",
    "message": "s3.endpoint must be https:// (credentials and presigned URLs travel to it); for a server without TLS inside the cluster, set insecure: true"
}]))]
pub struct StoreS3 {
    /// `https://s3.eu-west-1.amazonaws.com`, `https://minio.storage:9000`, ...
    #[schemars(regex(pattern = "^https?://[^/?#@ ]+(/[^?#@ ]*)?$"), length(max = 512))]
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix of every capture in this store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Secret in the operator's namespace with keys `accessKeyId`, `secretAccessKey` (and
    /// `sessionToken` for temporary credentials).
    #[schemars(regex(pattern = "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub secret_ref: String,
    /// Allow a plain `http://` endpoint (a server inside the cluster without TLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl DumpStoreSpec {
    /// Every rule the store breaks, in words (the CRD's schema says the same to the API server;
    /// this catches objects stored before it did).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let e = &self.s3.endpoint;
        let allowed = e.starts_with("https://") || (e.starts_with("http://") && self.s3.insecure);
        if !allowed {
            p.push(format!(
                "s3.endpoint {e:?} must be https:// (credentials and presigned URLs travel to it); \
                 for a server without TLS inside the cluster, set insecure: true"
            ));
        }
        if self.s3.bucket.is_empty() {
            p.push("s3.bucket is required".into());
        }
        if self.s3.secret_ref.is_empty() {
            p.push("s3.secretRef (a Secret in the operator's namespace) is required".into());
        }
        p
    }

    /// Whether a namespace with these labels may use the store.
    pub fn allows(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        self.allowed_namespaces.as_ref().is_none_or(|s| selector_matches(s, namespace_labels))
    }
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every expression holds; an
/// empty selector matches everything; an unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn store(endpoint: &str, insecure: bool) -> DumpStoreSpec {
        DumpStoreSpec {
            s3: StoreS3 {
                endpoint: endpoint.into(),
                bucket: "dumps".into(),
                secret_ref: "s3".into(),
                insecure,
                ..Default::default()
            },
            allowed_namespaces: None,
        }
    }

    #[test]
    fn plain_http_needs_insecure() {
        assert!(store("https://s3.amazonaws.com", false).problems().is_empty());
        let p = store("http://minio:9000", false).problems();
        assert!(p[0].contains("set insecure: true"), "{p:?}");
        assert!(store("http://minio:9000", true).problems().is_empty());
        assert!(!store("ftp://x", true).problems().is_empty());
    }

    #[test]
    fn namespaces_are_allowed_by_their_labels() {
        let mut s = store("https://s3", false);
        assert!(s.allows(&labels(&[])), "no selector: every namespace");
        s.allowed_namespaces = Some(LabelSelector {
            match_labels: Some(labels(&[("team", "a")]).into_iter().collect()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["sandbox".into()]),
            }]),
        });
        assert!(s.allows(&labels(&[("team", "a")])));
        assert!(!s.allows(&labels(&[("team", "b")])));
        assert!(!s.allows(&labels(&[("team", "a"), ("tier", "sandbox")])));
        let exists = LabelSelectorRequirement { key: "x".into(), operator: "Exists".into(), values: None };
        assert!(selector_matches(
            &LabelSelector { match_expressions: Some(vec![exists.clone()]), ..Default::default() },
            &labels(&[("x", "")])
        ));
        let bogus = LabelSelectorRequirement { operator: "Maybe".into(), ..exists };
        assert!(!selector_matches(
            &LabelSelector { match_expressions: Some(vec![bogus]), ..Default::default() },
            &labels(&[("x", "")])
        ));
    }
}
