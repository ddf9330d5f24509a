//! Who is calling: the bearer token is a projected ServiceAccount token bound to a pod, checked
//! with TokenReview for the route's audience. Namespace and pod come from the review, never from
//! the request. Reviews are cached for at most [`CACHE_TTL`] (a deleted pod's token stops
//! working within that time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;

use super::ApiError;

pub use api::wire::{ANALYZER_AUDIENCE, SIDECAR_AUDIENCE};
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The UID of the pod a bound token belongs to: a pod of the same name created later is another pod.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; beyond, expired ones are dropped, then the cache starts afresh.
const CACHE_MAX: usize = 10_000;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub pod: String,
    /// The bound pod's UID, as the API server vouches for it (`None` only from API servers that
    /// do not say it, before Kubernetes 1.30 or so).
    pub pod_uid: Option<String>,
    pub service_account: String,
}

/// What a TokenReview status says, for one audience: the caller, or why not (pure).
pub fn caller_from_review(status: &TokenReviewStatus, audience: &str) -> Result<Caller, ApiError> {
    if status.authenticated != Some(true) {
        let why = status.error.clone().unwrap_or_else(|| "not authenticated".into());
        // The API server says "token audiences ... is invalid for the target audiences" for a token
        // of another audience: that is a token of ours, sent to the wrong route.
        if why.contains("audience") {
            return Err(ApiError::forbidden(format!("the token is not for audience {audience}: {why}")));
        }
        return Err(ApiError::unauthorized(format!("the token was refused: {why}")));
    }
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(ApiError::forbidden(format!("the token is not for audience {audience}")));
    }
    let user = status.user.as_ref().ok_or_else(|| ApiError::unauthorized("the review names no user"))?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| ApiError::forbidden(format!("{username} is not a ServiceAccount")))?;
    // What a projected token binds it to, each as the review's first non-empty value.
    let extra =
        |key: &str| user.extra.as_ref().and_then(|e| e.get(key)).and_then(|v| v.first()).filter(|v| !v.is_empty());
    let pod = extra(POD_NAME_EXTRA)
        .ok_or_else(|| ApiError::forbidden("the token is not bound to a pod (use a projected token)"))?;
    let pod_uid = extra(POD_UID_EXTRA).cloned();
    Ok(Caller { namespace: namespace.into(), pod: pod.clone(), pod_uid, service_account: service_account.into() })
}

/// (SHA-256 of the token, audience) → (when reviewed, what the review said).
type ReviewCache = HashMap<(String, &'static str), (Instant, Result<Caller, ApiError>)>;

/// TokenReview with a cache.
pub struct Authenticator {
    client: kube::Client,
    cache: Mutex<ReviewCache>,
}

impl Authenticator {
    pub fn new(client: kube::Client) -> Self {
        Self { client, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller of a request with `authorization` (the header's value), for `audience`.
    pub async fn authenticate(&self, authorization: Option<&str>, audience: &'static str) -> Result<Caller, ApiError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <projected token>`"))?;
        // The cache holds a hash, not the token.
        let key = (store::sigv4::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes())), audience);
        if let Some((at, result)) = self.cache.lock().expect("poisoned").get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return result.clone();
        }
        let result = self.review(token, audience).await;
        // Outages of the API server are not cached: the next request asks again.
        if result.as_ref().is_ok() || result.as_ref().is_err_and(|e| e.status() < 500) {
            let mut cache = self.cache.lock().expect("poisoned");
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now(), result.clone()));
        }
        result
    }

    async fn review(&self, token: &str, audience: &'static str) -> Result<Caller, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![audience.to_string()]) },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let reviewed = api.create(&PostParams::default(), &review).await.map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            ApiError::unavailable(format!("cannot review the token: {e}"))
        })?;
        caller_from_review(&reviewed.status.unwrap_or_default(), audience)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: &[&str], user: &str, pod: Option<&str>) -> TokenReviewStatus {
        let extra = pod.map(|p| {
            BTreeMap::from([
                (POD_NAME_EXTRA.to_string(), vec![p.to_string()]),
                (POD_UID_EXTRA.to_string(), vec![format!("uid-of-{p}")]),
            ])
        });
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo { username: Some(user.into()), extra, ..Default::default() }),
            error: None,
        }
    }

    #[test]
    fn the_pod_comes_from_the_review() {
        let s = status(true, &[SIDECAR_AUDIENCE], "system:serviceaccount:shop:app", Some("cart-1"));
        let c = caller_from_review(&s, SIDECAR_AUDIENCE).unwrap();
        let uid = Some("uid-of-cart-1".to_string());
        assert_eq!(
            c,
            Caller { namespace: "shop".into(), pod: "cart-1".into(), pod_uid: uid, service_account: "app".into() }
        );
    }

    #[test]
    fn refusals_say_who_and_why() {
        let anon =
            TokenReviewStatus { authenticated: Some(false), error: Some("expired".into()), ..Default::default() };
        assert_eq!(caller_from_review(&anon, SIDECAR_AUDIENCE).unwrap_err().status(), 401);
        let other = status(true, &[ANALYZER_AUDIENCE], "system:serviceaccount:a:b", Some("p"));
        assert_eq!(caller_from_review(&other, SIDECAR_AUDIENCE).unwrap_err().status(), 403);
        let unbound = status(true, &[SIDECAR_AUDIENCE], "system:serviceaccount:a:b", None);
        assert_eq!(caller_from_review(&unbound, SIDECAR_AUDIENCE).unwrap_err().status(), 403);
        let human = status(true, &[SIDECAR_AUDIENCE], "alice", Some("p"));
        assert_eq!(caller_from_review(&human, SIDECAR_AUDIENCE).unwrap_err().status(), 403);
    }
}
