//! Rules a policy must satisfy, each with a message that says what to change. All problems are
//! reported at once: a user fixing a policy should not play whack-a-mole.

use crate::{CaptureKind, DumpPolicySpec, Error, TriggerKind};

impl DumpPolicySpec {
    pub fn validate(&self) -> Result<(), Error> {
        let problems = self.problems();
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid(problems)) }
    }

    /// Every rule the policy breaks, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let interval = self.counter_interval.std();
        if interval < std::time::Duration::from_millis(100) || interval > std::time::Duration::from_secs(3600) {
            p.push(format!("counterInterval must be between 100ms and 1h (got {})", self.counter_interval));
        }
        let l = &self.limits;
        if l.cooldown < self.counter_interval {
            p.push(format!(
                "limits.cooldown must be ≥ the counter interval ({} < {}): a trigger can fire at most once per interval",
                l.cooldown, self.counter_interval
            ));
        }
        if l.max_per_hour == 0 {
            p.push("limits.maxPerHour must be at least 1 (remove the triggers to disable captures)".into());
        }
        if l.max_bytes.value() < 1024.0 * 1024.0 {
            p.push(format!("limits.maxBytes must be at least 1Mi (got {})", l.max_bytes));
        }
        if l.min_free_disk.value() < 0.0 {
            p.push("limits.minFreeDisk cannot be negative".into());
        }
        match (&self.storage.volume, &self.storage.s3) {
            (Some(v), None) if v.path.is_empty() => p.push("storage.volume.path must not be empty".into()),
            // The claim is mounted at the path: Kubernetes takes absolute mount paths only.
            (Some(v), None) if v.claim_name.is_some() && (!v.path.starts_with('/') || v.path.contains("/..")) => {
                p.push(format!("storage.volume.path must be an absolute path with a claimName (got {:?})", v.path))
            }
            (Some(_), None) => {}
            (None, Some(s3)) => {
                if s3.names_own_settings() {
                    p.push(crate::S3_MOVED.into());
                }
                if s3.store_ref.is_empty() {
                    p.push(
                        "storage.s3.storeRef is required: the name of a DumpStore (kubectl get dumpstores), \
                         e.g. s3: {storeRef: team-dumps}"
                            .into(),
                    );
                }
            }
            _ => p.push(
                "storage needs exactly one of volume (e.g. volume: {path: /dumpwatch}) or s3 (a DumpStore: s3: {storeRef: <name>})"
                    .into(),
            ),
        }
        if self.retention.max_count == 0 {
            p.push("retention.maxCount must be at least 1".into());
        }
        if self.capture.kinds.is_empty() {
            p.push("capture.kinds must name at least one of dump, gcdump, stacks, trace, exceptions".into());
        }
        if !(1..=10_000).contains(&self.capture.exceptions_last) {
            p.push(format!(
                "capture.exceptionsLast must be between 1 and 10000 (got {}): the sidecar keeps that many \
                 exceptions per process, e.g. exceptionsLast: 100",
                self.capture.exceptions_last
            ));
        }
        let trace = self.capture.trace_duration.as_secs_f64();
        if !(1.0..=300.0).contains(&trace) {
            p.push(format!(
                "capture.traceDuration must be between 1s and 5m (got {trace} s): a trace samples every thread each millisecond"
            ));
        }
        if self.triggers.len() > 64 {
            p.push(format!(
                "triggers: at most 64 (got {}); one trigger can capture several kinds",
                self.triggers.len()
            ));
        }
        for (i, t) in self.triggers.iter().enumerate() {
            let at = format!("triggers[{i}] ({})", t.kind.name());
            crate::metric_trigger::problems(t, &at, &mut p);
            if t.kind.compares_a_value() {
                match t.above {
                    // A metric trigger's unit is the app's: zero or less can be a real threshold.
                    Some(a) if a.value() <= 0.0 && t.kind != TriggerKind::Metric => {
                        p.push(format!("{at}: `above` must be positive"))
                    }
                    Some(a) => {
                        if let Some(c) = t.clear_below
                            && c.value() > a.value()
                        {
                            p.push(format!("{at}: clearBelow ({c}) must not exceed above ({a})"));
                        }
                    }
                    None => {}
                }
                if t.kind == TriggerKind::Cpu && t.above.is_some_and(|a| a.value() > 1.0) {
                    p.push(format!("{at}: cpu is a ratio of the machine: write 80% or \"0.8\" (quoted in a DumpPolicy object), not 80"));
                }
                if t.kind == TriggerKind::GcHeapGrowth && t.for_.is_none_or(|f| f.std() < interval * 2) {
                    p.push(format!(
                        "{at}: gcHeapGrowth needs `for` of at least two counter intervals to measure a rate"
                    ));
                }
            } else if t.above.is_some() || t.clear_below.is_some() {
                p.push(format!("{at}: `above`/`clearBelow` only apply to metric triggers"));
            }
            if t.kind == TriggerKind::Schedule {
                match (t.every, &t.cron) {
                    (None, None) | (Some(_), Some(_)) => p.push(format!(
                        "{at}: give exactly one of `every` (e.g. every: 1h) or `cron` (e.g. cron: \"0 3 * * *\")"
                    )),
                    (Some(e), None) if e < l.cooldown => p.push(format!(
                        "{at}: every ({e}) is shorter than limits.cooldown ({}): most would be refused",
                        l.cooldown
                    )),
                    (None, Some(c)) => {
                        if let Err(e) = crate::Cron::parse(c) {
                            p.push(format!("{at}: {e}"));
                        }
                    }
                    _ => {}
                }
            } else if t.every.is_some() || t.cron.is_some() {
                p.push(format!("{at}: `every`/`cron` only apply to schedule triggers"));
            }
            p.extend(exception_problems(t, &at));
            if t.capture.as_ref().is_some_and(Vec::is_empty) {
                p.push(format!("{at}: capture must list at least one kind, or be left out"));
            }
            if t.kind == TriggerKind::Deadlock && t.for_.is_some() {
                p.push(format!("{at}: deadlock has no `for`: a cycle is confirmed by the detector itself"));
            }
            if t.kind == TriggerKind::HeapGrowth {
                p.push(format!(
                    "{at}: heapGrowth is not a trigger to write: it names the snapshots of growth verdicts; \
                     set heapSnapshots (e.g. heapSnapshots: {{every: 10m, keep: 6}}) to get them"
                ));
            }
        }
        if let Some(h) = &self.heap_snapshots {
            if h.every.std() < std::time::Duration::from_secs(1) {
                p.push(format!(
                    "heapSnapshots.every must be at least 1s (got {}): each heap snapshot runs a full blocking GC \
                     in the app (e.g. every: 10m)",
                    h.every
                ));
            }
            if !(4..=100).contains(&h.keep) {
                p.push(format!(
                    "heapSnapshots.keep must be between 4 and 100 (got {}): the growth verdict compares the last \
                     4 snapshots (three intervals), e.g. keep: 6",
                    h.keep
                ));
            }
            if !(1..=50).contains(&h.top_types) {
                p.push(format!(
                    "heapSnapshots.topTypes must be between 1 and 50 (got {}): each type is a metric series per \
                     process, e.g. topTypes: 10",
                    h.top_types
                ));
            }
        }
        p
    }

    /// Whether any trigger (or the default capture) asks for an `exceptions` capture: then the
    /// sidecar keeps each process' latest exceptions.
    pub fn captures_exceptions(&self) -> bool {
        (0..self.triggers.len()).any(|i| self.capture_kinds(i).contains(&CaptureKind::Exceptions))
            || self.capture.kinds.contains(&CaptureKind::Exceptions)
    }

    /// Whether the sidecar needs the runtime's exception events: an exception trigger or an
    /// exceptions capture.
    pub fn watches_exceptions(&self) -> bool {
        self.captures_exceptions() || self.triggers.iter().any(|t| t.kind == TriggerKind::Exception)
    }

    /// What the trigger at `index` captures.
    pub fn capture_kinds(&self, index: usize) -> Vec<CaptureKind> {
        self.triggers.get(index).and_then(|t| t.capture.clone()).unwrap_or_else(|| self.capture.kinds.clone())
    }
}

/// An exception trigger's own fields, or their absence on any other trigger.
fn exception_problems(t: &crate::Trigger, at: &str) -> Vec<String> {
    let mut p = Vec::new();
    if t.kind != TriggerKind::Exception {
        if t.exception_type.is_some() || t.count.is_some() || t.window.is_some() {
            p.push(format!("{at}: {}", crate::EXCEPTION_FIELDS_ONLY));
        }
        return p;
    }
    if t.for_.is_some() {
        p.push(format!("{at}: an exception trigger has no `for`: write count and window (e.g. count: 5, window: 1m)"));
    }
    if let Some(pattern) = &t.exception_type
        && (pattern.is_empty() || pattern.len() > 512 || pattern.chars().any(char::is_whitespace))
    {
        p.push(format!(
            "{at}: exceptionType {pattern:?} must be a type name without spaces, 1 to 512 characters, `*` for any \
             run of characters (e.g. exceptionType: \"System.*Timeout*\")"
        ));
    }
    if t.count.is_some_and(|c| c == 0 || c > 1_000_000) {
        p.push(format!("{at}: count must be between 1 and 1000000 (got {})", t.count.unwrap_or(0)));
    }
    if let Some(w) = t.window
        && !(1.0..=86_400.0).contains(&w.as_secs_f64())
    {
        p.push(format!("{at}: window must be between 1s and 1d (got {w}), e.g. window: 1m"));
    }
    p
}

#[cfg(test)]
mod tests {
    use crate::*;

    const FULL: &str = r#"
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {name: orders}
spec:
  selector: {matchLabels: {app: orders}}
  containers: [api]
  mode: connect
  counterInterval: 1s
  triggers:
    - {type: gcHeapBytes, above: 200Mi, for: 10s}
    - {type: cpu, above: 80%, for: 30s, clearBelow: 50%}
    - {type: gcHeapGrowth, above: 20Mi, for: 1m}
    - {type: deadlock, capture: [stacks, dump]}
    - {type: onDemand, file: /dumpwatch/request}
    - {type: schedule, every: 6h}
    - {type: schedule, cron: "0 3 * * 1-5"}
  capture: {kinds: [dump, gcdump], dumpType: heap, topTypes: 5}
  limits: {maxPerHour: 2, cooldown: 10m, maxBytes: 50Mi, minFreeDisk: 1Gi}
  storage: {volume: {path: /dumps}}
  retention: {maxCount: 5, maxAge: 7d}
  analysis: {enabled: false}
"#;

    #[test]
    fn a_whole_dumppolicy_parses() {
        let p = DumpPolicySpec::from_yaml(FULL).unwrap();
        assert_eq!(p.mode, Mode::Connect);
        assert_eq!(p.triggers.len(), 7);
        assert_eq!(p.triggers[0].above.unwrap().value(), 200.0 * 1048576.0);
        assert_eq!(p.triggers[1].clear_below.unwrap().value(), 0.5);
        assert_eq!(p.limits.max_bytes.value(), 50.0 * 1048576.0);
        assert_eq!(p.capture_kinds(3), vec![CaptureKind::Stacks, CaptureKind::Dump]);
        assert_eq!(p.capture_kinds(0), vec![CaptureKind::Dump, CaptureKind::Gcdump]);
        assert_eq!(p.retention.max_age, Duration::from_secs(7 * 86400));
        // Round trip through JSON (what the API server stores).
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<DumpPolicySpec>(&json).unwrap(), p);
    }

    #[test]
    fn an_empty_spec_has_safe_defaults() {
        let p = DumpPolicySpec::from_yaml("{}").unwrap();
        assert_eq!(p.mode, Mode::Listen);
        assert_eq!(p.limits.max_per_hour, 4);
        assert!(p.limits.cooldown >= p.counter_interval);
        assert_eq!(p.storage.volume.as_ref().unwrap().path, "/dumpwatch");
    }

    #[test]
    fn problems_are_all_reported_in_words() {
        let bad = r#"
counterInterval: 30s
triggers:
  - {type: gcHeapBytes}
  - {type: cpu, above: 80}
  - {type: deadlock, above: 3}
  - {type: schedule, cron: "0 25 * * *"}
limits: {cooldown: 5s}
storage: {volume: {path: /d}, s3: {storeRef: s}}
"#;
        let err = DumpPolicySpec::from_yaml(bad).unwrap_err().to_string();
        for needle in [
            "limits.cooldown must be ≥ the counter interval (5s < 30s)",
            "triggers[0] (gcHeapBytes): `above` or `below` (the threshold) is required",
            "write 80% or \"0.8\"",
            "only apply to metric triggers",
            "exactly one of volume (e.g. volume: {path: /dumpwatch}) or s3",
            "triggers[3] (schedule): cron hour field \"25\"",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn storage_is_volume_by_default_or_exactly_what_is_written() {
        let p = DumpPolicySpec::from_yaml("triggers: [{type: deadlock}]").unwrap();
        assert_eq!(p.storage, Storage::default());
        let p = DumpPolicySpec::from_yaml("storage: {s3: {storeRef: team}}").unwrap();
        assert_eq!((p.storage.volume, p.storage.s3.unwrap().store_ref.as_str()), (None, "team"));
        let err = DumpPolicySpec::from_yaml("storage: {}").unwrap_err().to_string();
        assert!(err.contains("storage needs exactly one of volume"), "{err}");
    }

    #[test]
    fn a_policy_naming_its_own_endpoint_or_secret_is_told_to_use_a_store() {
        let err =
            DumpPolicySpec::from_yaml("storage: {s3: {endpoint: \"http://10.0.0.1\", bucket: b, secretRef: admin}}")
                .unwrap_err()
                .to_string();
        assert!(err.contains("can no longer name an endpoint") && err.contains("storeRef: <store name>"), "{err}");
        assert!(err.contains("storage.s3.storeRef is required"), "{err}");
        let err =
            DumpPolicySpec::from_yaml("storage: {s3: {storeRef: team, secretRef: admin}}").unwrap_err().to_string();
        assert!(err.contains("kubectl get dumpstores"), "{err}");
    }

    #[test]
    fn a_claim_needs_an_absolute_path() {
        let err = DumpPolicySpec::from_yaml("storage: {volume: {path: dumps, claimName: d}}").unwrap_err().to_string();
        assert!(err.contains("storage.volume.path must be an absolute path"), "{err}");
        assert!(DumpPolicySpec::from_yaml("storage: {volume: {path: /dumps/../etc, claimName: d}}").is_err());
        assert!(DumpPolicySpec::from_yaml("storage: {volume: {path: /dumps, claimName: d}}").is_ok());
        assert!(DumpPolicySpec::from_yaml("storage: {volume: {path: dumps}}").is_ok(), "standalone: relative is fine");
    }

    #[test]
    fn heap_snapshots_have_defaults_and_limits_in_words() {
        let p = DumpPolicySpec::from_yaml("heapSnapshots: {every: 30s}").unwrap();
        assert_eq!(p.heap_snapshots, Some(HeapSnapshots { every: Duration::from_secs(30), keep: 6, top_types: 10 }));
        assert_eq!(DumpPolicySpec::from_yaml("{}").unwrap().heap_snapshots, None, "off unless asked for");
        let err =
            DumpPolicySpec::from_yaml("heapSnapshots: {every: 100ms, keep: 3, topTypes: 0}").unwrap_err().to_string();
        for needle in [
            "heapSnapshots.every must be at least 1s (got 100ms): each heap snapshot runs a full blocking GC",
            "heapSnapshots.keep must be between 4 and 100 (got 3)",
            "heapSnapshots.topTypes must be between 1 and 50 (got 0)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        let err = DumpPolicySpec::from_yaml("triggers: [{type: heapGrowth}]").unwrap_err().to_string();
        assert!(err.contains("heapGrowth is not a trigger to write") && err.contains("set heapSnapshots"), "{err}");
        let err = DumpPolicySpec::from_yaml("heapSnapshots: {evry: 1m}").unwrap_err().to_string();
        assert!(err.contains("evry"), "{err}");
    }

    #[test]
    fn exception_triggers_have_defaults_and_their_fields_only_on_them() {
        let p = DumpPolicySpec::from_yaml(
            "triggers: [{type: exception, exceptionType: \"System.*Timeout*\", count: 5, window: 30s, capture: [exceptions]}]\n\
             capture: {exceptionsLast: 20}",
        )
        .unwrap();
        let t = &p.triggers[0];
        assert_eq!(
            (t.exception_type.as_deref(), t.count, t.window),
            (Some("System.*Timeout*"), Some(5), Some(Duration::from_secs(30)))
        );
        assert_eq!(p.capture.exceptions_last, 20);
        assert!(p.watches_exceptions() && p.captures_exceptions());
        let p = DumpPolicySpec::from_yaml("triggers: [{type: exception}]").unwrap();
        assert!(p.watches_exceptions() && !p.captures_exceptions(), "a trigger alone still needs the events");
        assert!(!DumpPolicySpec::from_yaml("{}").unwrap().watches_exceptions());
        let err = DumpPolicySpec::from_yaml(
            "triggers: [{type: exception, count: 0, window: 500ms, for: 1m, exceptionType: \"a b\"}, {type: deadlock, count: 3}]\n\
             capture: {exceptionsLast: 0}",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "triggers[0] (exception): count must be between 1 and 1000000 (got 0)",
            "triggers[0] (exception): window must be between 1s and 1d (got 500ms)",
            "triggers[0] (exception): an exception trigger has no `for`",
            "exceptionType \"a b\" must be a type name without spaces",
            "triggers[1] (deadlock): exceptionType, count and window only apply to an exception trigger",
            "capture.exceptionsLast must be between 1 and 10000 (got 0)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn typos_are_refused() {
        let err = DumpPolicySpec::from_yaml("limits: {cooldwon: 5m}").unwrap_err().to_string();
        assert!(err.contains("cooldwon"), "{err}");
        let err = DumpPolicySpec::from_yaml("triggers: [{type: heap}]").unwrap_err().to_string();
        assert!(err.contains("heap"), "{err}");
    }

    #[test]
    fn hand_written_policies_refuse_unknown_fields_and_api_objects_of_a_newer_version_are_read() {
        let err =
            DumpPolicySpec::from_yaml("triggers: [{type: gcHeapBytes, above: 500, fro: 1m}]\ncapture: {kind: [dump]}")
                .unwrap_err()
                .to_string();
        assert!(err.contains("`triggers[0].fro`") && err.contains("`capture.kind`"), "{err}");
        let whole = "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: p}\nspec:\n  limits: {maxPerHuor: 2}\n";
        let err = DumpPolicySpec::from_yaml(whole).unwrap_err().to_string();
        assert!(err.contains("`limits.maxPerHuor`") && !err.contains("metadata"), "{err}");
        let whole = "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: p}\nspec:\n  triggers: [{type: gcHeapBytes, above: 500Mi}]\n";
        DumpPolicySpec::from_yaml(whole).expect("a whole object with a valid spec");
        // What a newer API server sends (a field this version does not know, defaulted by its CRD).
        let newer = r#"{"capture": {"kinds": ["dump"], "someFutureLimit": 7}, "triggers": [{"type": "deadlock", "future": true}]}"#;
        let spec: DumpPolicySpec = serde_json::from_str(newer).expect("a newer object is read");
        assert_eq!(spec.triggers[0].kind, TriggerKind::Deadlock);
    }

    #[test]
    fn schema_names_the_fields() {
        let s = DumpPolicySpec::json_schema().to_string();
        for f in ["counterInterval", "maxPerHour", "clearBelow", "gcHeapBytes", "dumpType"] {
            assert!(s.contains(f), "{f}");
        }
    }
}
