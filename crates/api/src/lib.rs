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

/// A hand-written spec and the paths of the fields in it that the spec does not have (the types
/// ignore them, see [`spec`]), found while the one parse of the text decodes it.
struct SpecAndUnknown {
    spec: DumpPolicySpec,
    unknown: Vec<String>,
}

impl<'de> serde::Deserialize<'de> for SpecAndUnknown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut unknown = Vec::new();
        let spec = serde_ignored::deserialize(d, |path| unknown.push(field_path(&path.to_string())))?;
        Ok(Self { spec, unknown })
    }
}

/// `triggers.0.fro` as the validation messages name fields: `triggers[0].fro`.
fn field_path(dotted: &str) -> String {
    let mut out = String::new();
    for part in dotted.split('.') {
        match part.parse::<usize>() {
            Ok(i) => out.push_str(&format!("[{i}]")),
            Err(_) if out.is_empty() => out.push_str(part),
            Err(_) => out.push_str(&format!(".{part}")),
        }
    }
    out
}

impl DumpPolicySpec {
    /// Parse and validate a policy from YAML. Accepts either a bare spec or a whole
    /// `DumpPolicy` object (`apiVersion`/`kind`/`metadata`/`spec`), so the same file works with
    /// `kubectl apply` and with the standalone sidecar.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        // The object's own fields (apiVersion, kind, metadata, status) are not the spec's business.
        #[derive(serde::Deserialize)]
        struct Wrapped {
            spec: SpecAndUnknown,
        }
        // serde-saphyr rather than serde_yaml: serde_yaml is archived and flagged unmaintained
        // (RUSTSEC-2024-0320), and kube-rs itself moved to serde-saphyr.
        let looks_wrapped = text.lines().any(|l| l.starts_with("spec:"));
        let SpecAndUnknown { spec, unknown } = if looks_wrapped {
            serde_saphyr::from_str::<Wrapped>(text).map(|w| w.spec)
        } else {
            serde_saphyr::from_str::<SpecAndUnknown>(text)
        }
        .map_err(|e| Error::Yaml(e.to_string()))?;
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
