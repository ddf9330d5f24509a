//! The rendered chart on the real kube-apiserver (etcd + apiserver only): server-side dry run of
//! every object in every mode (with the Prometheus operator's and cert-manager's real CRDs,
//! pinned, from `scripts/setup`), then the chart applied for real and the operator's
//! ServiceAccount asked `kubectl auth can-i` what it may and may not do. Last, with no operator
//! running, a pod in an opted-in namespace is still created (failurePolicy Ignore).

use std::path::PathBuf;
use std::time::Duration;

use chart_tests::{NAMESPACE, SERVICE_ACCOUNT, TLS_SECRET, WEBHOOK_CONFIGURATION, chart_dir, render_text};
use harness::{ControlPlane, Options, cache_dir};

/// The third-party CRDs that `scripts/setup` fetched (pinned versions).
fn third_party_crds() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["prometheus-operator-v0.85.0", "cert-manager-v1.21.2"] {
        let dir = cache_dir().join("crds").join(dir);
        assert!(dir.join(".complete").exists(), "{} is missing: run scripts/setup", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn start() -> ControlPlane {
    let opts = || Options { controller_manager: false, node_agent: false, ..Options::default() };
    ControlPlane::start_with(opts()).expect("control plane starts")
}

/// `kubectl auth can-i` as the operator's ServiceAccount: true for "yes".
fn can_i(cp: &ControlPlane, args: &[&str]) -> bool {
    let sa = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let out = cp.kubectl_cmd().args(["auth", "can-i", "--as", &sa]).args(args).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(answer == "yes" || answer == "no", "can-i {args:?}: {answer} {}", String::from_utf8_lossy(&out.stderr));
    answer == "yes"
}

#[test]
fn chart_on_the_real_apiserver() {
    let cp = start();
    for f in third_party_crds()
        .into_iter()
        .chain(["dumppolicy", "dumpsnapshot", "dumpstore"].map(|c| chart_dir().join(format!("crds/{c}.yaml"))))
    {
        // Server-side: cert-manager's issuer CRDs exceed the client-side last-applied annotation.
        cp.kubectl(&["apply", "--server-side", "-f", &f.display().to_string()]).unwrap();
    }
    cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]).unwrap();
    cp.kubectl(&["create", "namespace", NAMESPACE]).unwrap();

    // Every object of every mode passes the API server's validation (strict fields, CRD schemas).
    let monitoring = [
        "monitoring.podMonitor.enabled=true",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "dashboards.enabled=true",
        "storage.s3.createSecret=true",
        "storage.s3.accessKeyId=AKIDEXAMPLE",
        "storage.s3.secretAccessKey=secret",
    ];
    for mode in ["self", "cert-manager"] {
        let cert = format!("certificates.mode={mode}");
        for with_monitoring in [false, true] {
            let mut set = vec![cert.as_str()];
            if with_monitoring {
                set.extend(monitoring);
            }
            let manifest = render_text(&set, &[]).unwrap();
            let out = cp
                .kubectl_stdin(&["apply", "--dry-run=server", "--validate=strict", "-f", "-"], &manifest)
                .unwrap_or_else(|e| panic!("{mode}, monitoring {with_monitoring}: {e}"));
            for kind in ["deployment.apps", "mutatingwebhookconfiguration.admissionregistration.k8s.io"] {
                assert!(out.contains(kind), "{out}");
            }
            if with_monitoring {
                for kind in ["podmonitor.monitoring.coreos.com", "prometheusrule.monitoring.coreos.com"] {
                    assert!(out.contains(kind), "{out}");
                }
            }
            if mode == "cert-manager" {
                assert!(out.contains("certificate.cert-manager.io/dumpwatch-operator"), "{out}");
            }
        }
    }

    // Applied for real (self mode), then the operator's ServiceAccount is asked.
    cp.apply(&render_text(&[], &[]).unwrap()).unwrap();
    cp.kubectl(&["create", "namespace", "shop"]).unwrap();
    let yes: &[&[&str]] = &[
        &["watch", "dumppolicies.dumpwatch.dev", "-A"],
        &["patch", "dumppolicies.dumpwatch.dev", "--subresource=status", "-n", "shop"],
        &["create", "dumpsnapshots.dumpwatch.dev", "-n", "shop"],
        &["delete", "dumpsnapshots.dumpwatch.dev", "-n", "shop"],
        &["update", "dumpsnapshots.dumpwatch.dev", "--subresource=status", "-n", "shop"],
        &["update", "dumpsnapshots.dumpwatch.dev", "--subresource=finalizers", "-n", "shop"],
        &["list", "pods", "-A"],
        &["watch", "pods", "-n", "shop"],
        &["create", "events", "-n", "shop"],
        &["patch", "events.events.k8s.io", "-n", "shop"],
        &["create", "jobs.batch", "-n", "shop"],
        &["delete", "jobs.batch", "-n", "shop"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["get", &format!("mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}")],
        &["patch", &format!("mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}")],
        &["get", "secrets/dumpwatch-s3", "-n", NAMESPACE],
        &["update", &format!("secrets/{TLS_SECRET}"), "-n", NAMESPACE],
        &["create", "leases.coordination.k8s.io", "-n", NAMESPACE],
        &["update", "leases.coordination.k8s.io/dumpwatch-operator-leader", "-n", NAMESPACE],
    ];
    let no: &[&[&str]] = &[
        // Secrets: nowhere else, never listed, written only for its own TLS Secret.
        &["get", "secrets", "-n", "shop"],
        &["get", "secrets", "-A"],
        &["list", "secrets", "-n", NAMESPACE],
        &["watch", "secrets", "-n", NAMESPACE],
        &["create", "secrets", "-n", NAMESPACE],
        &["update", "secrets/dumpwatch-s3", "-n", NAMESPACE],
        &["delete", &format!("secrets/{TLS_SECRET}"), "-n", NAMESPACE],
        // Pods: read only; no exec, logs, port-forward, eviction.
        &["create", "pods", "--subresource=exec", "-n", "shop"],
        &["get", "pods", "--subresource=log", "-n", "shop"],
        &["create", "pods", "--subresource=portforward", "-n", "shop"],
        &["create", "pods", "--subresource=eviction", "-n", "shop"],
        &["create", "pods", "-n", "shop"],
        &["patch", "pods", "-n", "shop"],
        &["delete", "pods", "-n", "shop"],
        // Policies are the user's.
        &["create", "dumppolicies.dumpwatch.dev", "-n", "shop"],
        &["delete", "dumppolicies.dumpwatch.dev", "-n", "shop"],
        // Only its own webhook configuration, never a new one or another one.
        &["create", "mutatingwebhookconfigurations"],
        &["patch", "mutatingwebhookconfigurations/someone-elses"],
        &["patch", "validatingwebhookconfigurations/someone-elses"],
        // Leases of others and elsewhere.
        &["update", "leases.coordination.k8s.io/kube-scheduler", "-n", NAMESPACE],
        &["create", "leases.coordination.k8s.io", "-n", "shop"],
        // No way to more rights.
        &["create", "serviceaccounts", "--subresource=token", "-n", "shop"],
        &["create", "rolebindings.rbac.authorization.k8s.io", "-n", "shop"],
        &["escalate", "clusterroles.rbac.authorization.k8s.io"],
        &["impersonate", "serviceaccounts"],
        &["update", "jobs.batch", "-n", "shop"],
        &["get", "configmaps", "-n", "shop"],
        &["get", "nodes"],
    ];
    let wrong: Vec<String> = yes
        .iter()
        .filter(|a| !can_i(&cp, a))
        .map(|a| format!("expected yes: {a:?}"))
        .chain(no.iter().filter(|a| can_i(&cp, a)).map(|a| format!("expected no: {a:?}")))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The webhook is down (no operator runs here): a pod in an opted-in namespace is still created,
    // uninjected, within the webhook's timeout.
    cp.kubectl(&["label", "namespace", "shop", "dumpwatch.dev/inject=enabled"]).unwrap();
    // No controller manager here to make it.
    cp.kubectl(&["create", "serviceaccount", "default", "-n", "shop"]).unwrap();
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orders-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "shop/orders:1"}]}}"#;
    let t0 = std::time::Instant::now();
    cp.apply(pod).unwrap();
    let created = cp.kubectl_json(&["get", "pod", "-n", "shop", "orders-1"]).unwrap();
    let containers = created["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "not injected: {created}");
    assert!(t0.elapsed() < Duration::from_secs(20), "took {:?}", t0.elapsed());
    // ... and the API server did try the webhook (the namespace selector matched) and failed open.
    let log = cp.log("kube-apiserver");
    assert!(log.contains("failing open") && log.contains("inject.dumpwatch.dev"), "{}", tail(&log));
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(4000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `helm install`, `upgrade`, `uninstall` and a second `install` against the real API server:
/// CRDs come from `crds/`, and what the operator writes at run time (the TLS Secret's data, the
/// webhook's `caBundle`) survives an upgrade and, for the Secret, an uninstall.
#[test]
fn helm_lifecycle_keeps_what_the_operator_wrote() {
    let cp = start();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let chart = chart_dir().display().to_string();
    let helm = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", &kubeconfig];
        all.extend(args);
        chart_tests::helm(&all).unwrap_or_else(|e| panic!("{e}"))
    };
    helm(&["install", "dumpwatch", &chart, "-n", NAMESPACE, "--create-namespace"]);
    cp.kubectl(&["get", "crd", "dumppolicies.dumpwatch.dev", "dumpsnapshots.dumpwatch.dev"]).unwrap();

    // What the operator does in self mode: fill the Secret, patch caBundle.
    let pem = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="; // base64 of a PEM header: any bytes do
    cp.kubectl(&[
        "patch",
        "secret",
        TLS_SECRET,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        &format!(r#"{{"data": {{"ca.crt": "{pem}", "tls.crt": "{pem}", "tls.key": "{pem}"}}}}"#),
    ])
    .unwrap();
    cp.kubectl(&[
        "patch",
        "mutatingwebhookconfiguration",
        WEBHOOK_CONFIGURATION,
        "--type=json",
        "-p",
        &format!(r#"[{{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "{pem}"}}]"#),
    ])
    .unwrap();

    helm(&["upgrade", "dumpwatch", &chart, "-n", NAMESPACE, "--set", "webhook.timeoutSeconds=7"]);
    let hook = cp.kubectl_json(&["get", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION]).unwrap();
    assert_eq!(hook["webhooks"][0]["timeoutSeconds"], 7, "the upgrade applied");
    assert_eq!(hook["webhooks"][0]["clientConfig"]["caBundle"], pem, "caBundle survives an upgrade: {hook}");
    let secret = cp.kubectl_json(&["get", "secret", TLS_SECRET, "-n", NAMESPACE]).unwrap();
    assert_eq!(secret["data"]["ca.crt"], pem, "the CA survives an upgrade: {secret}");

    helm(&["uninstall", "dumpwatch", "-n", NAMESPACE]);
    assert!(cp.kubectl(&["get", "deployment", chart_tests::OPERATOR, "-n", NAMESPACE]).is_err());
    assert!(cp.kubectl(&["get", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION]).is_err());
    let secret = cp.kubectl_json(&["get", "secret", TLS_SECRET, "-n", NAMESPACE]).unwrap();
    assert_eq!(secret["data"]["ca.crt"], pem, "the CA is kept on uninstall (sidecars trust it)");
    cp.kubectl(&["get", "crd", "dumpsnapshots.dumpwatch.dev"]).expect("CRDs stay");

    // A second install adopts the kept Secret and keeps its CA.
    helm(&["install", "dumpwatch", &chart, "-n", NAMESPACE]);
    let secret = cp.kubectl_json(&["get", "secret", TLS_SECRET, "-n", NAMESPACE]).unwrap();
    assert_eq!(secret["data"]["ca.crt"], pem, "{secret}");
}
