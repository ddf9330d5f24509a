//! Test support for `charts/dumpwatch`: render the chart with the pinned helm that
//! `scripts/setup` installs, split the output into objects, and read the PromQL that the
//! dashboards and alert rules ship.
//!
//! The tests themselves (`tests/`) run the real tools: helm, kube-apiserver + kubectl, promtool,
//! Prometheus.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use harness::{Result, Value};

/// `charts/dumpwatch`.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/dumpwatch")
}

/// The helm that `scripts/setup` builds (`<cache>/helm`); `$DUMPWATCH_HELM` overrides.
pub fn helm_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DUMPWATCH_HELM") {
        return Ok(PathBuf::from(p));
    }
    let p = harness::cache_dir().join("helm");
    if !p.exists() {
        return Err(format!("{} is missing: run scripts/setup (it installs helm)", p.display()).into());
    }
    Ok(p)
}

/// Runs helm; stdout on success, stdout + stderr in the error.
pub fn helm(args: &[&str]) -> Result<String> {
    let out = Command::new(helm_path()?).args(args).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("helm {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(stdout)
}

/// The release every test renders: `dumpwatch` in namespace `dumpwatch`, so the objects are
/// called `dumpwatch-operator` like docs/operator.md's examples.
pub const RELEASE: &str = "dumpwatch";
pub const NAMESPACE: &str = "dumpwatch";
pub const OPERATOR: &str = "dumpwatch-operator";
pub const SERVICE_ACCOUNT: &str = "dumpwatch-operator";
pub const WEBHOOK_CONFIGURATION: &str = "dumpwatch-operator-dumpwatch";
pub const TLS_SECRET: &str = "dumpwatch-operator-tls";

/// `helm template` of the chart with `--set` values; the YAML text.
pub fn render_text(set: &[&str], extra: &[&str]) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE];
    for s in set {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    helm(&args)
}

/// `helm template` of the chart with `--set` values, as objects.
pub fn render(set: &[&str]) -> Result<Vec<Value>> {
    objects(&render_text(set, &[])?)
}

/// The objects of a multi-document YAML stream (empty documents dropped).
pub fn objects(yaml: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// The object of that kind and name; an error listing what there is otherwise.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).ok_or_else(|| {
        let have: Vec<String> = objects.iter().map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect();
        format!("no {kind}/{name} among {have:?}").into()
    })
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| o["kind"].as_str().unwrap_or_default().to_string()).collect()
}

/// The rendered chart with every webhook's `clientConfig.service` replaced by
/// `url: https://127.0.0.1:<port><path>`: on the test node pods share the host's loopback, and
/// Endpoints may not hold loopback addresses, so a Service cannot route the API server to the
/// operator. The only change made to the chart's objects (its caBundle handling is untouched).
pub fn webhook_by_url(manifest: &str, port: u16) -> Result<String> {
    let mut docs = objects(manifest)?;
    let mut swapped = 0;
    for d in docs.iter_mut().filter(|d| d["kind"] == "MutatingWebhookConfiguration") {
        for w in d["webhooks"].as_array_mut().into_iter().flatten() {
            let path = w["clientConfig"]["service"]["path"].as_str().unwrap_or("/mutate").to_string();
            w["clientConfig"] = serde_json::json!({"url": format!("https://127.0.0.1:{port}{path}")});
            swapped += 1;
        }
    }
    if swapped == 0 {
        return Err("the chart rendered no MutatingWebhookConfiguration".into());
    }
    Ok(docs.iter().map(|d| serde_json::to_string(d).expect("JSON")).collect::<Vec<_>>().join("\n---\n"))
}

/// Every container of the pod running and Ready.
pub fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Names of the pod's containers.
pub fn containers(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// One PromQL query of a dashboard: where it is (dashboard, panel title) and its text.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub expr: String,
}

/// `charts/dumpwatch/dashboards/*.json`, parsed, sorted by file name.
pub fn dashboards() -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(chart_dir().join("dashboards"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every target expression of every panel (rows' nested panels included).
pub fn panel_queries(file: &str, dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(file: &str, panels: &Value, out: &mut Vec<PanelQuery>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(file, &p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push(PanelQuery {
                        dashboard: file.to_string(),
                        panel: p["title"].as_str().unwrap_or_default().to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(file, &dashboard["panels"], &mut out);
    out
}

/// The `expr` of every rule in the shipped rule file, with its alert name.
pub fn rule_exprs() -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(chart_dir().join("rules/dumpwatch.rules.yaml"))?;
    let rules: Value = serde_saphyr::from_str(&text)?;
    let mut out = Vec::new();
    for g in rules["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or_default();
            out.push((name.to_string(), r["expr"].as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

/// Metric names a PromQL expression refers to: every identifier that starts with one of our
/// prefixes (`dotnet_`, `dumpwatch_`). Enough for our own queries, which use no other metrics
/// but Prometheus' own `ALERTS`.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (expr[i..].starts_with("dotnet_") || expr[i..].starts_with("dumpwatch_")) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |n| i + n);
            // A label value in quotes (`{kind="dumpwatch_x"}`) is not a metric.
            let quoted = i > 0 && bytes[i - 1] == b'"';
            if !quoted {
                names.push(expr[i..end].to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Runs every panel query of every shipped dashboard on `prom` (Grafana variables replaced:
/// `$namespace` and `$pod` by the given regexes), waiting up to `timeout` for each to return
/// data; the number of queries checked, or an error naming every query that stayed empty.
/// For scenario tests too: point it at the scenario's Prometheus.
pub fn dashboard_queries_return_data(
    prom: &harness::Prometheus,
    namespace: &str,
    pod: &str,
    timeout: std::time::Duration,
) -> Result<usize> {
    let mut empty = Vec::new();
    let mut checked = 0;
    for (file, dashboard) in dashboards()? {
        for q in panel_queries(&file, &dashboard) {
            let expr = substitute_variables(&q.expr, namespace, pod);
            checked += 1;
            if let Err(e) = prom.wait_for_samples(&expr, timeout) {
                empty.push(format!("{} / {}: `{expr}`: {e}", q.dashboard, q.panel));
            }
        }
    }
    if empty.is_empty() { Ok(checked) } else { Err(format!("queries without data:\n{}", empty.join("\n")).into()) }
}

/// Replaces the Grafana variables our dashboards use by values a plain Prometheus query accepts.
pub fn substitute_variables(expr: &str, namespace: &str, pod: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${namespace}", namespace)
        .replace("$namespace", namespace)
        .replace("${pod}", pod)
        .replace("$pod", pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_skip_functions_labels_and_quoted_values() {
        let e = r#"sum by (kind) (increase(dumpwatch_operator_findings_total{kind="dumpwatch_x"}[30m])) / dotnet_gc_heap_size_bytes"#;
        assert_eq!(metric_names(e), ["dotnet_gc_heap_size_bytes", "dumpwatch_operator_findings_total"]);
    }

    #[test]
    fn grafana_variables_are_replaced() {
        let e = r#"rate(dotnet_exceptions_total{namespace=~"$namespace", pod=~"${pod}"}[$__rate_interval])"#;
        assert_eq!(
            substitute_variables(e, "shop", ".*"),
            r#"rate(dotnet_exceptions_total{namespace=~"shop", pod=~".*"}[1m])"#
        );
    }
}
