//! The JSON bodies of docs/operator.md ("JSON bodies"). camelCase; unknown fields are ignored.

use api::{Artifact, DumpPolicySpec};
use serde::{Deserialize, Serialize};
use store::MultipartUpload;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReply {
    pub name: String,
    pub resource_version: String,
    pub spec: DumpPolicySpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    pub capture: String,
    pub files: Vec<FileRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRequest {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadReply {
    pub files: Vec<FileUpload>,
}

/// Where one file goes: `url` (one presigned PUT) or `multipart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUpload {
    pub name: String,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<MultipartUpload>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    pub capture: String,
    pub name: String,
    pub upload_id: String,
    /// ETags of parts 1..=n, quotes included; empty aborts the upload.
    #[serde(default)]
    pub etags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureReport {
    /// The capture's `manifest.json`.
    pub manifest: serde_json::Value,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The on-demand request (a `DumpSnapshot` name) this capture answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// A live finding document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<serde_json::Value>,
}

/// A capture that failed, or an on-demand request the sidecar's limits refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// Unique per failure; names the snapshot a trigger's failure creates.
    pub id: String,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub process: Option<String>,
    #[serde(default)]
    pub runtime_version: Option<String>,
    /// The trigger's name (`onDemand`, `gcHeapBytes`, …).
    pub trigger: String,
    /// The value that fired the trigger.
    #[serde(default)]
    pub value: Option<f64>,
    /// The on-demand request (a `DumpSnapshot` name) this failure answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Why, in words a user acts on.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureReply {
    pub snapshot: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsReply {
    pub requests: Vec<CaptureRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    pub snapshot: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingsReport {
    pub snapshot: String,
    pub findings: serde_json::Value,
}

/// Every error: `{"error": "<reason>", "message": "<what to do>"}` with the HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    pub message: String,
}
