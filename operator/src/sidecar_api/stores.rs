//! `DumpStore`s: which store a policy or snapshot uses, whether its namespace may, and the store
//! with the credentials of its Secret. Tenants name a store; only the store (an administrator's
//! cluster-scoped object) names an endpoint, a bucket and a Secret.

use std::collections::BTreeMap;

use api::{DumpPolicySpec, DumpStore, StorageTarget, StoreS3};
use k8s_openapi::api::core::v1::{Namespace, Secret};

use super::{ACCESS_KEY_ID, ApiError, SECRET_ACCESS_KEY, SESSION_TOKEN};

/// Why the store named `name` cannot serve `namespace` (pure): missing, invalid, or not allowed.
/// `labels` are the namespace's labels (`None`: not read, because the store allows all).
pub fn store_refusal(
    name: &str,
    store: Option<&DumpStore>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    let Some(store) = store else {
        return Some(format!(
            "DumpStore {name} does not exist: a cluster admin creates it (kubectl get dumpstores lists the stores), \
             or set storage.s3.storeRef to one of them"
        ));
    };
    let problems = store.spec.problems();
    if !problems.is_empty() {
        return Some(format!("DumpStore {name} is invalid (a cluster admin must fix it): {}", problems.join("; ")));
    }
    if !store.spec.allows(labels.unwrap_or(&BTreeMap::new())) {
        return Some(format!(
            "DumpStore {name} does not allow namespace {namespace} (its spec.allowedNamespaces): \
             ask a cluster admin to allow it, or name another store"
        ));
    }
    None
}

/// A store that refused, or the API server that could not be asked.
#[derive(Debug)]
pub enum StoreError {
    /// The policy or store must change: what to tell the user.
    Refused(String),
    /// Worth another try.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(m) | Self::Unavailable(m) => f.write_str(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // The sidecar cannot fix it: the policy's Ready condition says what to change.
            StoreError::Refused(m) => ApiError::conflict(m),
            StoreError::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

/// The store `name`, checked for `namespace` when `check_namespace` (deletion skips that check:
/// keys are confined to the namespace's own prefix anyway, and a finalizer must not hang because
/// an admin narrowed a store later).
pub async fn resolve(
    client: &kube::Client,
    name: &str,
    namespace: &str,
    check_namespace: bool,
) -> Result<DumpStore, StoreError> {
    let unavailable = |what: String| move |e: kube::Error| StoreError::Unavailable(format!("reading {what}: {e}"));
    let stores: kube::Api<DumpStore> = kube::Api::all(client.clone());
    let store = stores.get_opt(name).await.map_err(unavailable(format!("DumpStore {name}")))?;
    let labels = match &store {
        Some(s) if check_namespace && s.spec.allowed_namespaces.is_some() => {
            Some(namespace_labels(client, namespace).await?)
        }
        _ => None,
    };
    let refusal = if check_namespace {
        store_refusal(name, store.as_ref(), namespace, labels.as_ref())
    } else {
        // Only existence and validity count.
        store_refusal(name, store.as_ref().map(without_selector).as_ref(), namespace, None)
    };
    if let Some(why) = refusal {
        return Err(StoreError::Refused(why));
    }
    Ok(store.expect("checked above"))
}

fn without_selector(s: &DumpStore) -> DumpStore {
    let mut s = s.clone();
    s.spec.allowed_namespaces = None;
    s
}

/// The labels of `namespace` (a store's `allowedNamespaces` selects by them).
async fn namespace_labels(client: &kube::Client, namespace: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns = namespaces
        .get_opt(namespace)
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading namespace {namespace}: {e}")))?;
    Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default())
}

/// What is wrong with a policy in `namespace`, in words: its own rules, and the store it names
/// as `cached` gives it (the controllers' `DumpStore` cache: a policy reconcile does not GET its
/// store). The namespace's labels are read only for a store that limits namespaces. Empty when
/// it is valid; only an unreachable API server is an error.
pub async fn policy_problems(
    client: &kube::Client,
    namespace: &str,
    spec: &DumpPolicySpec,
    cached: impl Fn(&str) -> Option<std::sync::Arc<DumpStore>>,
) -> Result<Vec<String>, StoreError> {
    let mut problems = spec.problems();
    if let StorageTarget::S3(s3) = spec.storage.target()
        && !s3.store_ref.is_empty()
    {
        let store = cached(&s3.store_ref);
        let labels = match store.as_deref() {
            Some(s) if s.spec.allowed_namespaces.is_some() => Some(namespace_labels(client, namespace).await?),
            _ => None,
        };
        problems.extend(store_refusal(&s3.store_ref, store.as_deref(), namespace, labels.as_ref()));
    }
    Ok(problems)
}

/// The S3 store of `store` with the credentials of its Secret in `operator_namespace`.
pub async fn s3_store(
    client: &kube::Client,
    operator_namespace: &str,
    store: &DumpStore,
    part_size: u64,
) -> Result<store::S3Store, ApiError> {
    let s3 = &store.spec.s3;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), operator_namespace);
    let what = format!("Secret {operator_namespace}/{}", s3.secret_ref);
    let secret = secrets
        .get_opt(&s3.secret_ref)
        .await
        .map_err(|e| ApiError::unavailable(format!("reading {what}: {e}")))?
        .ok_or_else(|| ApiError::internal(format!("the storage credentials {what} do not exist")))?;
    let data = secret.data.unwrap_or_default();
    let field =
        |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).trim().to_string()).filter(|v| !v.is_empty());
    let missing = |k: &str| ApiError::internal(format!("{what} has no {k}"));
    let credentials = store::Credentials {
        access_key_id: field(ACCESS_KEY_ID).ok_or_else(|| missing(ACCESS_KEY_ID))?,
        secret_access_key: field(SECRET_ACCESS_KEY).ok_or_else(|| missing(SECRET_ACCESS_KEY))?,
        session_token: field(SESSION_TOKEN),
    };
    let store = store::S3Store::new(s3_config(s3), credentials)
        .map_err(|e| ApiError::internal(format!("the S3 storage of DumpStore: {e}")))?
        .with_part_size(part_size);
    Ok(store)
}

/// A store's S3 settings as a store configuration. AWS endpoints get virtual-host addressing,
/// every other server (MinIO, Ceph, moto, ...) path-style, which they all support.
pub fn s3_config(s3: &StoreS3) -> store::S3Config {
    let host = s3.endpoint.split("://").nth(1).unwrap_or(&s3.endpoint).split(['/', ':']).next().unwrap_or_default();
    store::S3Config {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        path_style: !host.ends_with(".amazonaws.com"),
    }
}

/// The URI prefix of `pod`'s captures in a store: `s3://<bucket>/<prefix>/<namespace>/<pod>/`.
/// Everything a snapshot may list, fetch or delete lies under it.
pub fn own_prefix(s3: &store::S3Store, namespace: &str, pod: &str) -> String {
    format!("{}/", s3.uri(&s3.key(&[namespace, pod])))
}

#[cfg(test)]
mod tests {
    use api::{DumpStoreSpec, StoreS3};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn store(allowed: Option<&str>) -> DumpStore {
        let selector = allowed.map(|team| LabelSelector {
            match_labels: Some([("team".to_string(), team.to_string())].into()),
            ..Default::default()
        });
        DumpStore::new(
            "team-a",
            DumpStoreSpec {
                s3: StoreS3 {
                    endpoint: "https://s3".into(),
                    bucket: "dumps".into(),
                    secret_ref: "s3".into(),
                    ..Default::default()
                },
                allowed_namespaces: selector,
            },
        )
    }

    #[test]
    fn a_store_not_allowed_for_the_namespace_is_refused_in_words() {
        let b = BTreeMap::from([("team".to_string(), "b".to_string())]);
        let a = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let s = store(Some("a"));
        assert_eq!(store_refusal("team-a", Some(&s), "shop-a", Some(&a)), None);
        let why = store_refusal("team-a", Some(&s), "shop-b", Some(&b)).unwrap();
        assert!(why.contains("does not allow namespace shop-b") && why.contains("ask a cluster admin"), "{why}");
        assert!(store_refusal("team-a", Some(&s), "shop-b", None).is_some(), "unknown labels match no selector");
        assert_eq!(store_refusal("team-a", Some(&store(None)), "any", None), None);
        let missing = store_refusal("nope", None, "shop", None).unwrap();
        assert!(missing.contains("DumpStore nope does not exist") && missing.contains("kubectl get dumpstores"));
        let mut plain = store(None);
        plain.spec.s3.endpoint = "http://10.0.0.1:9000".into();
        assert!(store_refusal("team-a", Some(&plain), "shop", None).unwrap().contains("insecure: true"));
    }

    #[test]
    fn aws_gets_virtual_hosts_and_the_rest_path_style() {
        let s3 = |endpoint: &str| StoreS3 { endpoint: endpoint.into(), ..Default::default() };
        assert!(!s3_config(&s3("https://s3.eu-west-1.amazonaws.com")).path_style);
        assert!(s3_config(&s3("http://minio.storage:9000")).path_style);
        assert!(s3_config(&s3("http://127.0.0.1:9000")).path_style);
    }
}
