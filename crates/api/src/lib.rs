//! `api`: the `DumpPolicy` spec, shared by the sidecar (standalone: a YAML file) and the
//! operator (the CRD, which wraps [`DumpPolicySpec`] with `#[derive(CustomResource)]`).
//!
//! Plain serde + `schemars` types: no Kubernetes dependency, so the sidecar stays small.
//! Every field has a default that is safe for a production pod (rate limits on, a byte budget,
//! a disk reserve), and [`DumpPolicySpec::validate`] explains what to fix in words.
//!
//! ```
//! let p = api::DumpPolicySpec::from_yaml("triggers: [{type: deadlock}]").unwrap();
//! assert_eq!(p.triggers[0].kind, api::TriggerKind::Deadlock);
//! ```

pub mod crash_dumps;
mod crd;
mod cron;
mod metric_trigger;
mod spec;
mod trigger;
mod units;
mod validate;
pub mod wire;

pub use crd::*;
pub use cron::Cron;
pub use metric_trigger::{MetricRef, MetricSource};
pub use spec::*;
pub use trigger::{EXCEPTION_FIELDS_ONLY, Trigger, TriggerKind};
pub use units::{Duration, Quantity};

/// Everything that can be wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unit(String),
    #[error("the policy is not valid YAML for a DumpPolicy spec: {0}")]
    Yaml(String),
    #[error("the policy is invalid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error("not a findings document this operator reads: {0}")]
    Findings(String),
}

/// The paths of the fields in a hand-written policy that the spec does not have (the types
/// ignore them, see [`spec`]); in a whole object, only those under `spec`.
fn unknown_fields(text: &str, wrapped: bool) -> Result<Vec<String>, Error> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| Error::Yaml(e.to_string()))?;
    let mut unknown = Vec::new();
    // `triggers.0.fro` is written `triggers[0].fro`, as the validation messages name fields.
    let mut note = |path: serde_ignored::Path| {
        let text = path.to_string();
        let mut out = String::new();
        for part in text.split('.') {
            match part.parse::<usize>() {
                Ok(i) => out.push_str(&format!("[{i}]")),
                Err(_) if out.is_empty() => out.push_str(part),
                Err(_) => out.push_str(&format!(".{part}")),
            }
        }
        unknown.push(out);
    };
    let found = if wrapped {
        let spec = value.get("spec").cloned().unwrap_or(serde_json::Value::Null);
        serde_ignored::deserialize(spec, &mut note).map(|_: DumpPolicySpec| ())
    } else {
        serde_ignored::deserialize(value, &mut note).map(|_: DumpPolicySpec| ())
    };
    found.map_err(|e| Error::Yaml(e.to_string()))?;
    Ok(unknown)
}

impl DumpPolicySpec {
    /// Parse and validate a policy from YAML. Accepts either a bare spec or a whole
    /// `DumpPolicy` object (`apiVersion`/`kind`/`metadata`/`spec`), so the same file works with
    /// `kubectl apply` and with the standalone sidecar.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        #[derive(serde::Deserialize)]
        struct Wrapped {
            spec: DumpPolicySpec,
        }
        // serde-saphyr rather than serde_yaml: serde_yaml is archived and flagged unmaintained
        // (RUSTSEC-2024-0320), and kube-rs itself moved to serde-saphyr.
        let looks_wrapped = text.lines().any(|l| l.starts_with("spec:"));
        let spec = if looks_wrapped {
            serde_saphyr::from_str::<Wrapped>(text).map(|w| w.spec)
        } else {
            serde_saphyr::from_str::<DumpPolicySpec>(text)
        }
        .map_err(|e| Error::Yaml(e.to_string()))?;
        let unknown = unknown_fields(text, looks_wrapped)?;
        if !unknown.is_empty() {
            return Err(Error::Yaml(format!(
                "unknown field{} {} (a typo? `kubectl explain dumppolicy.spec` lists the fields)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
            )));
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The JSON schema of the spec (what the CRD publishes under `spec`).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(DumpPolicySpec)).expect("schema serializes")
    }
}
