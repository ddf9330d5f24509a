//! The HTTPS contract between the operator and its clients: the sidecar (policy, upload URLs,
//! capture and failure reports, on-demand requests) and the analysis Job (findings).
//!
//! One set of types for both ends: the operator's routes deserialize exactly what the sidecar's
//! client and `dumpwatch analyze --report-to` serialize, so renaming or retyping a field breaks
//! the build of both. The routes are [`ROUTES`]; `docs/operator.md`'s "JSON bodies" section is
//! generated from [`document`] (`cargo run -p api --bin contractgen`) and a test fails when the
//! page drifts from it.
//!
//! Field names are camelCase, except the capture [`Manifest`], which is the capture's
//! `manifest.json` as the sidecar writes it on disk (snake_case). Unknown fields are ignored.

use serde::{Deserialize, Serialize};

use crate::{Artifact, CaptureKind, DumpPolicySpec, TriggerKind};

/// The audience of a sidecar's projected ServiceAccount token.
pub const SIDECAR_AUDIENCE: &str = "dumpwatch.dev/sidecar";
/// The audience of an analysis Job's projected ServiceAccount token.
pub const ANALYZER_AUDIENCE: &str = "dumpwatch.dev/analyzer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One route of the API: what the operator serves and the clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Whose token the route takes ([`SIDECAR_AUDIENCE`] or [`ANALYZER_AUDIENCE`]).
    pub audience: &'static str,
}

/// `GET` → [`PolicyReply`].
pub const POLICY: Route = Route { method: Method::Get, path: "/v1/sidecar/policy", audience: SIDECAR_AUDIENCE };
/// [`UploadRequest`] → [`UploadReply`].
pub const UPLOADS: Route = Route { method: Method::Post, path: "/v1/sidecar/uploads", audience: SIDECAR_AUDIENCE };
/// [`CompleteRequest`] → 204.
pub const COMPLETE: Route =
    Route { method: Method::Post, path: "/v1/sidecar/uploads/complete", audience: SIDECAR_AUDIENCE };
/// [`CaptureReport`] → [`CaptureReply`].
pub const CAPTURES: Route = Route { method: Method::Post, path: "/v1/sidecar/captures", audience: SIDECAR_AUDIENCE };
/// [`FailureReport`] → [`CaptureReply`].
pub const FAILURES: Route = Route { method: Method::Post, path: "/v1/sidecar/failures", audience: SIDECAR_AUDIENCE };
/// `GET ?wait=<seconds>` (long poll) → [`RequestsReply`].
pub const REQUESTS: Route = Route { method: Method::Get, path: "/v1/sidecar/requests", audience: SIDECAR_AUDIENCE };
/// [`FindingsReport`] → 204.
pub const FINDINGS: Route = Route { method: Method::Post, path: "/v1/jobs/findings", audience: ANALYZER_AUDIENCE };

/// Every route, in the order the documentation lists them.
pub const ROUTES: [Route; 7] = [POLICY, UPLOADS, COMPLETE, CAPTURES, FAILURES, REQUESTS, FINDINGS];

/// `GET /v1/sidecar/policy`: the policy named by the pod's `dumpwatch.dev/injected` annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReply {
    pub name: String,
    /// Changes whenever the policy does: the sidecar re-applies the spec only then.
    #[serde(default)]
    pub resource_version: String,
    pub spec: DumpPolicySpec,
}

/// `POST /v1/sidecar/uploads`: upload URLs for the files of one capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// The capture id, one path segment (`[A-Za-z0-9._-]`, at most 128).
    pub capture: String,
    pub files: Vec<FileSize>,
}

/// A file to upload and its stored (compressed) size: the URLs sign it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSize {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReply {
    pub files: Vec<UploadTarget>,
}

/// Where one file goes: `url` (one presigned PUT) or `multipart`, never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub name: String,
    /// What to report once stored: `s3://bucket/key`.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<MultipartUpload>,
}

/// A started multipart upload: part `i` (1-based) is exactly `partSize` bytes (the last one the
/// rest) from byte `(i - 1) * partSize`, PUT to `parts[i - 1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultipartUpload {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<String>,
}

/// `POST /v1/sidecar/uploads/complete`: the operator completes (or, with no ETags, aborts) the
/// multipart upload with its own credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    pub capture: String,
    pub name: String,
    pub upload_id: String,
    /// ETags of parts 1..=n as S3 answered them (quotes included); empty aborts the upload.
    #[serde(default)]
    pub etags: Vec<String>,
}

/// `POST /v1/sidecar/captures`: a stored capture → a `DumpSnapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureReport {
    pub manifest: Manifest,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The on-demand request (a `DumpSnapshot` name) this capture answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The live finding that caused the capture (a deadlock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<serde_json::Value>,
}

/// `manifest.json`: everything a reader needs without opening the artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The capture id (one path segment in a report).
    pub id: String,
    /// RFC 3339, UTC.
    pub created: String,
    #[serde(flatten)]
    pub identity: Identity,
    pub process: ProcessEntry,
    pub trigger: Firing,
    pub dump_type: String,
    /// Every file of the capture as it lies in the capture directory (uncompressed).
    pub files: Vec<FileEntry>,
    /// Capture kinds that failed, with why (the others are still worth keeping).
    #[serde(default)]
    pub failures: Vec<String>,
    /// A live finding that caused the capture (a deadlock), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<serde_json::Value>,
    pub seconds: f64,
}

/// Where the sidecar runs (the Downward API in a pod; flags standalone). Empty when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// The captured process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// The pid the sidecar sees (its own PID namespace when shared).
    pub pid: u32,
    /// The pid in the app's namespace.
    pub ns_pid: u32,
    pub name: String,
    #[serde(default)]
    pub command_line: String,
    #[serde(default)]
    pub runtime_version: Option<String>,
}

/// A trigger that fired, with what was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// Index into the policy's `triggers`; `None` for an on-demand request that no `onDemand`
    /// trigger describes, and for crash dumps.
    pub index: Option<usize>,
    pub trigger: TriggerKind,
    pub value: f64,
    pub threshold: Option<f64>,
    pub detail: String,
}

/// One file of a capture directory: size and SHA-256 of the bytes on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `POST /v1/sidecar/failures`: a capture that failed (every kind failed: disk guard, runtime
/// refused), or an on-demand request the sidecar's limits refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// Unique per failure, one path segment: names the snapshot a trigger's failure creates.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub pid: u32,
    pub process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    pub trigger: TriggerKind,
    /// The value that fired the trigger.
    pub value: f64,
    /// The on-demand request (a `DumpSnapshot` name) this failure answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Why, in words a user acts on.
    pub reason: String,
}

/// The answer to a capture or failure report: the `DumpSnapshot` that records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureReply {
    pub snapshot: String,
}

/// `GET /v1/sidecar/requests?wait=30`: on-demand requests for the calling pod (`[]` after `wait`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsReply {
    #[serde(default)]
    pub requests: Vec<CaptureRequest>,
}

/// One on-demand request: a `DumpSnapshot` to answer, for one process or (no `pid`) every one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    pub snapshot: String,
    #[serde(default)]
    pub pid: Option<u32>,
}

/// `POST /v1/jobs/findings`: the analysis Job's findings document (docs/findings-schema.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingsReport {
    pub snapshot: String,
    pub findings: serde_json::Value,
}

/// Every refusal: `{"error": "<Reason>", "message": "<what to fix>"}` with the reason's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorReason,
    pub message: String,
}

/// Why the operator refused a call. Clients decide on this (retry or give up), never on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorReason {
    /// 400: a malformed body, or a storage refusal the caller caused (bad upload id, small parts).
    BadRequest,
    /// 401: no token, or one the API server does not accept.
    Unauthorized,
    /// 403: a token of another audience, not bound to a pod, or for another pod's objects.
    Forbidden,
    /// 404: the pod was not injected, or its policy or snapshot is gone.
    NotFound,
    /// 409: volume storage on an upload route, or a snapshot not in the expected phase.
    Conflict,
    /// 413: a file over 5 TiB, a capture over the policy's `limits.maxBytes`, or a request body
    /// over the API's limit.
    TooLarge,
    /// 429: this pod sent more requests than the API's per-pod rate allows: try again later.
    TooManyRequests,
    /// 500: the operator's own configuration (a missing storage Secret, ...).
    Internal,
    /// 502: the storage failed (unreachable, busy): trying again later may succeed.
    StorageFailed,
    /// 502: the storage refused the operator (`AccessDenied`, `NoSuchBucket`): an administrator
    /// must fix the policy's storage or its Secret; trying again does not help.
    StorageRefused,
    /// 503: the API server failed.
    Unavailable,
}

impl ErrorReason {
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::StorageFailed | Self::StorageRefused => 502,
            Self::Unavailable => 503,
        }
    }

    /// Whether the same call may succeed later. Tokens are rotated by the kubelet and reviews
    /// cached, so 401/403 are worth another try; a refusal of the request itself is not.
    pub fn is_transient(self) -> bool {
        match self {
            Self::Unauthorized
            | Self::Forbidden
            | Self::TooManyRequests
            | Self::Internal
            | Self::StorageFailed
            | Self::Unavailable => true,
            Self::BadRequest | Self::NotFound | Self::Conflict | Self::TooLarge | Self::StorageRefused => false,
        }
    }
}

/// The "JSON bodies" section of `docs/operator.md`: every route with an example of what is sent
/// and answered, serialized from the types above (so the page cannot describe fields the code
/// does not have).
pub fn document() -> String {
    let json = |v: &dyn erased::Json| v.pretty();
    let sha = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945".to_string();
    let manifest = Manifest {
        version: 1,
        id: "20261128T021500Z-Orders-42-onDemand".into(),
        created: "2026-11-28T02:15:00Z".into(),
        identity: Identity { pod: "orders-7d9f-x2x".into(), namespace: "shop".into(), container: "app".into() },
        process: ProcessEntry {
            pid: 42,
            ns_pid: 1,
            name: "Orders".into(),
            command_line: "dotnet /app/Orders.dll".into(),
            runtime_version: Some("8.0.4".into()),
        },
        trigger: Firing {
            index: None,
            trigger: TriggerKind::OnDemand,
            value: 1.0,
            threshold: None,
            detail: "DumpSnapshot orders-now".into(),
        },
        dump_type: "heap".into(),
        files: vec![FileEntry { name: "core.42".into(), bytes: 734003200, sha256: sha.clone() }],
        failures: Vec::new(),
        finding: None,
        seconds: 4.2,
    };
    let spec = DumpPolicySpec { triggers: vec![crate::Trigger::new(TriggerKind::Deadlock)], ..Default::default() };
    let sections: Vec<(Route, Option<String>, String, &str)> = vec![
        (
            POLICY,
            None,
            json(&PolicyReply { name: "orders".into(), resource_version: "4711".into(), spec }),
            "`spec` is a whole `DumpPolicySpec` (defaults filled in), shortened here.",
        ),
        (
            UPLOADS,
            Some(json(&UploadRequest {
                capture: manifest.id.clone(),
                files: vec![
                    FileSize { name: "stacks.json.zst".into(), size: 2048 },
                    FileSize { name: "core.42.zst".into(), size: 150994944 },
                ],
            })),
            json(&UploadReply {
                files: vec![
                    UploadTarget {
                        name: "stacks.json.zst".into(),
                        uri: "s3://dumps/dw/shop/orders-7d9f-x2x/<capture>/stacks.json.zst".into(),
                        url: Some("<presigned PUT of exactly 2048 bytes>".into()),
                        multipart: None,
                    },
                    UploadTarget {
                        name: "core.42.zst".into(),
                        uri: "s3://dumps/dw/shop/orders-7d9f-x2x/<capture>/core.42.zst".into(),
                        url: None,
                        multipart: Some(MultipartUpload {
                            upload_id: "<upload id>".into(),
                            part_size: 67108864,
                            parts: vec!["<presigned UploadPart 1>".into(), "<part 2>".into(), "<part 3>".into()],
                        }),
                    },
                ],
            }),
            "A file above 64 MiB gets a multipart upload. Every URL signs its `Content-Length`: send exactly \
             `size` bytes (a part: `partSize`, the last one the rest). Keep each part's `ETag` response \
             header, quotes included.",
        ),
        (
            COMPLETE,
            Some(json(&CompleteRequest {
                capture: manifest.id.clone(),
                name: "core.42.zst".into(),
                upload_id: "<upload id>".into(),
                etags: vec!["\"<etag 1>\"".into(), "\"<etag 2>\"".into(), "\"<etag 3>\"".into()],
            })),
            "204".into(),
            "Empty `etags` abort the upload (S3 would keep, and bill, the parts).",
        ),
        (
            CAPTURES,
            Some(json(&CaptureReport {
                manifest: manifest.clone(),
                artifacts: vec![Artifact {
                    kind: CaptureKind::Dump,
                    uri: "s3://dumps/dw/shop/orders-7d9f-x2x/<capture>/core.42.zst".into(),
                    size: 150994944,
                    sha256: sha.clone(),
                }],
                snapshot: Some("orders-now".into()),
                findings: None,
            })),
            json(&CaptureReply { snapshot: "orders-now".into() }),
            "`manifest` is the capture's `manifest.json`; `snapshot` (the on-demand request it answers) and \
             `findings` (the live finding) are optional. `size` and `sha256` describe the stored bytes.",
        ),
        (
            FAILURES,
            Some(json(&FailureReport {
                id: "20261128T021500Z-Orders-42-gcHeapBytes-failed".into(),
                container: Some("app".into()),
                pid: 42,
                process: "Orders".into(),
                runtime_version: Some("8.0.4".into()),
                trigger: TriggerKind::GcHeapBytes,
                value: 6.1e8,
                snapshot: None,
                reason: "capture failed: capturing pid 42: dump: disk guard: 3.1 GiB free on /dumpwatch, …".into(),
            })),
            json(&CaptureReply { snapshot: "orders-7d9f-x2x-20261128t021500z-orders-42-gcheapbytes-failed".into() }),
            "`snapshot` (optional) names the on-demand request this failure answers.",
        ),
        (
            REQUESTS,
            None,
            json(&RequestsReply {
                requests: vec![
                    CaptureRequest { snapshot: "orders-now".into(), pid: None },
                    CaptureRequest { snapshot: "orders-42".into(), pid: Some(42) },
                ],
            }),
            "`?wait=30` holds the call until a request comes or the seconds pass (then `[]`; at most 60).",
        ),
        (
            FINDINGS,
            Some(json(&FindingsReport {
                snapshot: "orders-now".into(),
                findings: serde_json::json!({"schema": "dumpwatch.findings", "version": 1, "…": "…"}),
            })),
            "204".into(),
            "`findings` is the findings document of docs/findings-schema.md.",
        ),
    ];
    let mut out = String::new();
    for (route, request, reply, note) in sections {
        out.push_str(&format!("#### `{} {}` ({} token)\n\n", route.method.as_str(), route.path, route.audience));
        out.push_str(note);
        out.push_str("\n\n");
        if let Some(body) = request {
            out.push_str(&format!("```json\n{body}\n```\n\n"));
        }
        out.push_str(&format!("Answer:\n\n```json\n{reply}\n```\n\n"));
    }
    out.push_str(&format!(
        "Refusals, every route:\n\n```json\n{}\n```\n\n",
        json(&ErrorReply {
            error: ErrorReason::StorageRefused,
            message: "S3 refused CreateMultipartUpload of \"dw/shop/…\": AccessDenied (HTTP 403): …".into(),
        })
    ));
    out.push_str("| `error` | status | worth retrying |\n|---|---|---|\n");
    for r in [
        ErrorReason::BadRequest,
        ErrorReason::Unauthorized,
        ErrorReason::Forbidden,
        ErrorReason::NotFound,
        ErrorReason::Conflict,
        ErrorReason::TooLarge,
        ErrorReason::TooManyRequests,
        ErrorReason::Internal,
        ErrorReason::StorageFailed,
        ErrorReason::StorageRefused,
        ErrorReason::Unavailable,
    ] {
        let name = serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        out.push_str(&format!("| `{name}` | {} | {} |\n", r.status(), if r.is_transient() { "yes" } else { "no" }));
    }
    out
}

/// Pretty JSON of any body type, with a `PolicyReply`'s spec cut to its triggers (a whole spec
/// would drown the page).
mod erased {
    pub trait Json {
        fn pretty(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            let mut v = serde_json::to_value(self).unwrap_or_default();
            if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.retain(|k, _| k == "triggers");
                spec.insert("…".into(), "…".into());
            }
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
    }
}

/// Where the generated section sits in `docs/operator.md`.
pub const DOC_BEGIN: &str =
    "<!-- BEGIN generated by `cargo run -p api --bin contractgen`: edit crates/api/src/wire.rs -->";
pub const DOC_END: &str = "<!-- END generated -->";

/// `page` with the generated section replaced by [`document`]; `None` without the markers.
pub fn with_document(page: &str) -> Option<String> {
    let start = page.find(DOC_BEGIN)? + DOC_BEGIN.len();
    let end = start + page[start..].find(DOC_END)?;
    Some(format!("{}\n\n{}{}", &page[..start], document(), &page[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_round_trips() {
        let doc = document();
        // Each JSON block of the page parses back (the placeholders are strings).
        for block in doc.split("```json\n").skip(1) {
            let json = &block[..block.find("\n```").unwrap()];
            serde_json::from_str::<serde_json::Value>(json).unwrap();
        }
        assert!(ROUTES.iter().all(|r| doc.contains(r.path)));
    }

    #[test]
    fn a_failure_report_needs_the_process_and_a_known_trigger() {
        let ok = r#"{"id":"x","pid":42,"process":"Orders","trigger":"onDemand","value":1,"reason":"r"}"#;
        let f: FailureReport = serde_json::from_str(ok).unwrap();
        assert_eq!((f.pid, f.trigger), (42, TriggerKind::OnDemand));
        assert!(serde_json::from_str::<FailureReport>(&ok.replace("onDemand", "sometimes")).is_err());
        assert!(serde_json::from_str::<FailureReport>(&ok.replace(r#""pid":42,"#, "")).is_err());
    }

    #[test]
    fn error_reasons_keep_their_status_and_name() {
        let e: ErrorReply = serde_json::from_str(r#"{"error":"StorageRefused","message":"m"}"#).unwrap();
        assert_eq!((e.error.status(), e.error.is_transient()), (502, false));
        assert_eq!(serde_json::to_value(ErrorReason::BadRequest).unwrap(), "BadRequest");
    }
}
