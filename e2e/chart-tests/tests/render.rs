//! `helm lint` and `helm template` of charts/dumpwatch with the pinned helm: each certificate mode,
//! monitoring on and off, and the properties the operator and the cluster rely on.

use chart_tests::{
    NAMESPACE, OPERATOR, TLS_SECRET, Value, WEBHOOK_CONFIGURATION, chart_dir, find, helm, kinds, render, render_text,
};

const MONITORING_ON: [&str; 4] = [
    "monitoring.podMonitor.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "dashboards.enabled=true",
];

#[test]
fn lints_in_every_mode() {
    let chart = chart_dir().display().to_string();
    for mode in ["self", "cert-manager"] {
        for monitoring in [false, true] {
            let mut args = vec!["lint".to_string(), "--strict".into(), chart.clone()];
            args.extend(["--set".into(), format!("certificates.mode={mode}")]);
            if monitoring {
                for s in MONITORING_ON {
                    args.extend(["--set".into(), s.into()]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = helm(&args).unwrap_or_else(|e| panic!("{mode}, monitoring {monitoring}: {e}"));
            assert!(out.contains("0 chart(s) failed"), "{out}");
        }
    }
}

#[test]
fn self_mode_without_monitoring() {
    let objs = render(&[]).unwrap();
    let k = kinds(&objs);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
        "Secret",
        "PodDisruptionBudget",
    ] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing from {k:?}");
    }
    for kind in ["Certificate", "Issuer", "PodMonitor", "ServiceMonitor", "PrometheusRule"] {
        assert!(!k.iter().any(|x| x == kind), "{kind} rendered with its option off: {k:?}");
    }
    // CRDs are not templates: helm installs crds/ first and never deletes them.
    assert!(!k.iter().any(|x| x == "CustomResourceDefinition"));
    let with_crds = chart_tests::objects(&render_text(&[], &["--include-crds"]).unwrap()).unwrap();
    find(&with_crds, "CustomResourceDefinition", "dumppolicies.dumpwatch.dev").unwrap();
    find(&with_crds, "CustomResourceDefinition", "dumpsnapshots.dumpwatch.dev").unwrap();

    let hook = find(&objs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION).unwrap();
    assert!(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null());
    let w = &hook["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert_eq!(w["timeoutSeconds"], 5);
    assert_eq!(w["namespaceSelector"]["matchLabels"]["dumpwatch.dev/inject"], "enabled");
    assert_eq!(w["rules"][0]["resources"][0], "pods");
    assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(w["clientConfig"]["service"]["name"], OPERATOR);
    assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(w["clientConfig"]["service"]["port"], 8443);
    assert!(w["clientConfig"]["caBundle"].is_null(), "the operator patches caBundle in");

    // The operator's own pods are excluded by the webhook's objectSelector.
    let deploy = find(&objs, "Deployment", OPERATOR).unwrap();
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert!(!object_selector_matches(&w["objectSelector"], pod_labels), "{pod_labels}");
    assert!(object_selector_matches(&w["objectSelector"], &serde_json::json!({"app": "orders"})));
    assert!(!object_selector_matches(&w["objectSelector"], &serde_json::json!({"dumpwatch.dev/snapshot": "s1"})));

    let secret = find(&objs, "Secret", TLS_SECRET).unwrap();
    assert!(secret["data"].is_null(), "the operator fills the TLS Secret in: {secret}");
    assert_eq!(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
}

#[test]
fn operator_deployment_is_locked_down() {
    let objs = render(&[]).unwrap();
    let deploy = find(&objs, "Deployment", OPERATOR).unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], chart_tests::SERVICE_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The operator's flags as environment variables (dumpwatch-operator --help; docs/operator.md).
    let env =
        |name: &str| c["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or(Value::Null);
    assert_eq!(env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(env("DUMPWATCH_METRICS_ADDR")["value"], "0.0.0.0:9090");
    assert_eq!(env("DUMPWATCH_LEASE_NAME")["value"], "dumpwatch-operator-leader");
    assert!(env("DUMPWATCH_NO_LEADER_ELECTION").is_null());
    assert_eq!(env("DUMPWATCH_OPERATOR_URL")["value"], format!("https://{OPERATOR}.{NAMESPACE}.svc:8443"));
    assert_eq!(env("DUMPWATCH_ANALYZER_IMAGE")["value"], "ghcr.io/dumpwatch/dumpwatch:0.1.0");
    assert_eq!(env("DUMPWATCH_ANALYSIS_TTL")["value"], "1h");
    assert_eq!(env("DUMPWATCH_CERT_MODE")["value"], "self");
    assert_eq!(env("DUMPWATCH_TLS_SECRET")["value"], TLS_SECRET);
    assert_eq!(env("DUMPWATCH_WEBHOOK_CONFIGURATION")["value"], WEBHOOK_CONFIGURATION);
    assert_eq!(env("DUMPWATCH_SIDECAR_IMAGE")["value"], "ghcr.io/dumpwatch/sidecar:0.1.0");
    assert_eq!(env("DUMPWATCH_SIDECAR_METRICS_PORT_NAME")["value"], "dw-metrics");
    let resources: Value = serde_json::from_str(env("DUMPWATCH_SIDECAR_RESOURCES")["value"].as_str().unwrap()).unwrap();
    assert_eq!(resources["limits"]["memory"], "128Mi");
    // Self mode: the operator makes its CA, so no CA file; cert-manager mode mounts one.
    assert!(env("DUMPWATCH_OPERATOR_CA_FILE").is_null());
    assert!(env("DUMPWATCH_ARTIFACT_VOLUME").is_null(), "the operator mounts no claim");
    let cm =
        render(&["certificates.mode=cert-manager", "operator.leaderElection.enabled=false", "operator.replicas=1"])
            .unwrap();
    let cm_pod = &find(&cm, "Deployment", OPERATOR).unwrap()["spec"]["template"]["spec"];
    let cm_env = cm_pod["containers"][0]["env"].to_string();
    assert!(
        cm_env.contains("/etc/dumpwatch/tls/ca.crt") && cm_env.contains("DUMPWATCH_NO_LEADER_ELECTION"),
        "{cm_env}"
    );
    assert_eq!(cm_pod["volumes"][1]["secret"]["secretName"], TLS_SECRET);

    let svc = find(&objs, "Service", OPERATOR).unwrap();
    let ports: Vec<(String, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["port"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("https".to_string(), 8443), ("metrics".to_string(), 9090)]);

    let np = find(&objs, "NetworkPolicy", OPERATOR).unwrap();
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert!(ingress[0]["from"].is_null(), "8443 from anywhere (the API server may call from the host network)");
    assert_eq!(ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
}

#[test]
fn extra_sans_reach_the_cert_manager_certificate() {
    let objs =
        render(&["certificates.mode=cert-manager", "certificates.extraSANs={127.0.0.1,ops.example.com,::1}"]).unwrap();
    let cert = find(&objs, "Certificate", OPERATOR).unwrap();
    let dns = cert["spec"]["dnsNames"].as_array().unwrap();
    assert_eq!(dns.len(), 5, "the four Service names and ops.example.com: {dns:?}");
    assert_eq!(dns[4], "ops.example.com");
    assert_eq!(cert["spec"]["ipAddresses"], serde_json::json!(["127.0.0.1", "::1"]));
    // Without extra SANs there is no ipAddresses key at all.
    let objs = render(&["certificates.mode=cert-manager"]).unwrap();
    assert!(find(&objs, "Certificate", OPERATOR).unwrap()["spec"]["ipAddresses"].is_null());
}

#[test]
fn cert_manager_mode_with_monitoring() {
    let mut set = vec!["certificates.mode=cert-manager"];
    set.extend(MONITORING_ON);
    let objs = render(&set).unwrap();
    let hook = find(&objs, "MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION).unwrap();
    assert_eq!(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], format!("{NAMESPACE}/{OPERATOR}"));
    let cert = find(&objs, "Certificate", OPERATOR).unwrap();
    assert_eq!(cert["spec"]["secretName"], TLS_SECRET);
    let dns: Vec<&str> = cert["spec"]["dnsNames"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(dns.contains(&"dumpwatch-operator.dumpwatch.svc"), "{dns:?}");
    // No issuer given: the chart brings a self-signed CA chain.
    assert_eq!(cert["spec"]["issuerRef"]["name"], "dumpwatch-operator-ca");
    find(&objs, "Issuer", "dumpwatch-operator-selfsigned").unwrap();
    find(&objs, "Issuer", "dumpwatch-operator-ca").unwrap();
    // cert-manager writes the Secret; the operator gets no write access to it or the webhook.
    assert!(find(&objs, "Secret", TLS_SECRET).is_err());
    let role = find(&objs, "Role", OPERATOR).unwrap();
    let secret_rules: Vec<&Value> =
        role["rules"].as_array().unwrap().iter().filter(|r| r["resources"][0] == "secrets").collect();
    assert_eq!(secret_rules.len(), 1, "{role}");
    assert_eq!(secret_rules[0]["verbs"], serde_json::json!(["get"]));
    let cluster_role = find(&objs, "ClusterRole", "dumpwatch-operator-dumpwatch").unwrap();
    assert!(!cluster_role.to_string().contains("mutatingwebhookconfigurations"), "{cluster_role}");

    let pm = find(&objs, "PodMonitor", "dumpwatch-sidecars").unwrap();
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert!(endpoint["port"].is_null(), "a port filter would drop a sidecar that declares no port");
    assert_eq!(endpoint["relabelings"][0]["regex"], "dumpwatch-sidecar");
    assert_eq!(endpoint["relabelings"][1]["replacement"], "${1}:9464");
    assert_eq!(pm["spec"]["namespaceSelector"]["any"], true);
    let sm = find(&objs, "ServiceMonitor", OPERATOR).unwrap();
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");

    // The PrometheusRule carries the plain rule file, unchanged.
    let rule = find(&objs, "PrometheusRule", "dumpwatch").unwrap();
    let file: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("rules/dumpwatch.rules.yaml")).unwrap())
            .unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);

    // Every dashboard file is in the ConfigMap Grafana's sidecar loads, byte for byte.
    let cm = find(&objs, "ConfigMap", "dumpwatch-dashboards").unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboards = chart_tests::dashboards().unwrap();
    assert!(dashboards.len() >= 2, "{dashboards:?}");
    for (name, _) in dashboards {
        let on_disk = std::fs::read_to_string(chart_dir().join("dashboards").join(&name)).unwrap();
        assert_eq!(cm["data"][&name].as_str().map(str::trim_end), Some(on_disk.trim_end()), "{name}");
    }
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    // values.schema.json: unknown keys (typos) and values outside the choices.
    let err = render(&["certificates.mode=vault"]).unwrap_err().to_string();
    assert!(err.contains("/certificates/mode") && err.contains("cert-manager"), "{err}");
    let err = render(&["certificate.mode=self"]).unwrap_err().to_string();
    assert!(err.contains("'certificate' not allowed"), "{err}");
    let err = render(&["sidecar.metricsPortName=dumpwatch-metrics"]).unwrap_err().to_string();
    assert!(err.contains("/sidecar/metricsPortName"), "{err}");
    let err = render(&["operator.leaderElection.enabled=false"]).unwrap_err().to_string();
    assert!(err.contains("needs operator.leaderElection.enabled"), "{err}");
    // One replica without leader election is fine.
    render(&["operator.leaderElection.enabled=false", "operator.replicas=1"]).unwrap();
    // The operator mounts no artifact volume any more: claims are named in each DumpPolicy.
    let err = render(&["storage.volume.claimName=dumps"]).unwrap_err().to_string();
    assert!(err.contains("'volume' not allowed"), "{err}");
}

#[test]
fn the_analysis_symbol_server_reaches_the_operator() {
    let server = |set: &[&str]| {
        let objs = render(set).unwrap();
        let deploy = find(&objs, "Deployment", OPERATOR).unwrap().clone();
        let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
        env.iter().find(|e| e["name"] == "DUMPWATCH_ANALYSIS_SYMBOL_SERVER").map(|e| e["value"].clone())
    };
    // Default: Microsoft's, where dotnet-dump finds DACs too.
    assert_eq!(server(&[]), Some(Value::from("https://msdl.microsoft.com/download/symbols")));
    assert_eq!(
        server(&["analysis.symbolServer=https://symbols.mirror.svc:8443/symbols"]),
        Some(Value::from("https://symbols.mirror.svc:8443/symbols"))
    );
    // A DAC is code the analyzer runs: never over plain HTTP.
    let err = render(&["analysis.symbolServer=http://symbols.mirror.svc:8080/symbols"]).unwrap_err().to_string();
    assert!(err.contains("/analysis/symbolServer"), "{err}");
    // Empty is passed on as empty: the operator then tells Jobs not to download.
    assert_eq!(server(&["analysis.symbolServer="]), Some(Value::from("")));
    let err = render(&["analysis.symbolServer=msdl.microsoft.com"]).unwrap_err().to_string();
    assert!(err.contains("/analysis/symbolServer"), "{err}");
}

#[test]
fn the_dac_store_and_the_trust_in_captured_dacs_reach_the_operator() {
    let env = |set: &[&str], name: &str| {
        let objs = render(set).unwrap();
        let deploy = find(&objs, "Deployment", OPERATOR).unwrap().clone();
        let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
        env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone())
    };
    // Defaults: no store, captured DACs and the image's runtimes untrusted.
    assert_eq!(env(&[], "DUMPWATCH_ANALYSIS_DAC_STORE_VOLUME"), None);
    assert_eq!(env(&[], "DUMPWATCH_ANALYSIS_TRUST_CAPTURED_DACS"), Some(Value::from("false")));
    assert_eq!(env(&[], "DUMPWATCH_ANALYSIS_LOCAL_RUNTIMES"), Some(Value::from("false")));
    let store = env(&["analysis.dacStore.persistentVolumeClaim.claimName=dacs"], "DUMPWATCH_ANALYSIS_DAC_STORE_VOLUME")
        .expect("the store's volume");
    let volume: Value = serde_json::from_str(store.as_str().unwrap()).unwrap();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "dacs");
    assert_eq!(
        env(&["analysis.trustCapturedDacs=true"], "DUMPWATCH_ANALYSIS_TRUST_CAPTURED_DACS"),
        Some(Value::from("true"))
    );
    assert!(render(&["analysis.trustCapturedDacs=yes please"]).is_err());
}

/// A webhook `objectSelector` (matchLabels + matchExpressions) against a pod's labels.
fn object_selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let match_labels = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_ok = match_labels.into_iter().all(|(k, v)| label(k) == v.as_str());
    let exprs_ok = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap();
        let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        match e["operator"].as_str().unwrap() {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            other => panic!("operator {other}"),
        }
    });
    labels_ok && exprs_ok
}

#[test]
fn tenant_roles_artifact_guard_s3_secret_and_stores() {
    let objs = render(&[
        "storage.s3.createSecret=true",
        "storage.s3.accessKeyId=AKID",
        "storage.s3.secretAccessKey=SECRET",
        "storage.stores[0].name=team",
        "storage.stores[0].endpoint=https://s3.example",
        "storage.stores[0].bucket=dumps",
        "storage.stores[0].allowedNamespaces.matchLabels.team=a",
    ])
    .unwrap();
    // The Secret has the keys the operator reads, not AWS_* names.
    let secret = find(&objs, "Secret", "dumpwatch-s3").unwrap();
    let data = &secret["stringData"];
    assert_eq!(data[operator::sidecar_api::ACCESS_KEY_ID], "AKID", "{secret}");
    assert_eq!(data[operator::sidecar_api::SECRET_ACCESS_KEY], "SECRET", "{secret}");
    assert!(data.get(operator::sidecar_api::SESSION_TOKEN).is_none(), "{secret}");
    let store = find(&objs, "DumpStore", "team").unwrap();
    assert_eq!(store["spec"]["s3"]["secretRef"], "dumpwatch-s3", "{store}");
    assert_eq!(store["spec"]["allowedNamespaces"]["matchLabels"]["team"], "a", "{store}");
    assert!(store["metadata"].get("namespace").is_none(), "cluster scoped: {store}");
    // Aggregated into Kubernetes' roles; edit never reaches status, stores or secrets.
    let view = find(&objs, "ClusterRole", "dumpwatch-view").unwrap();
    let edit = find(&objs, "ClusterRole", "dumpwatch-edit").unwrap();
    for (role, to) in [(view, ["view", "edit", "admin"].as_slice()), (edit, ["edit", "admin"].as_slice())] {
        for r in to {
            assert_eq!(role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{r}")], "true");
        }
    }
    assert!(view["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-view").is_some());
    let text = edit["rules"].to_string();
    for never in ["status", "dumpstores", "secrets"] {
        assert!(!text.contains(never), "{never} in {text}");
    }
    let vap = find(&objs, "ValidatingAdmissionPolicy", "dumpwatch-snapshot-artifacts").unwrap();
    let who = vap["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    assert!(who.contains("system:serviceaccount:dumpwatch:dumpwatch-operator"), "{who}");
    find(&objs, "ValidatingAdmissionPolicyBinding", "dumpwatch-snapshot-artifacts").unwrap();

    let off = render(&["rbac.aggregateToDefaultRoles=false", "rbac.guardSnapshotArtifacts=false"]).unwrap();
    let k = kinds(&off);
    assert!(!k.iter().any(|x| x == "ValidatingAdmissionPolicy"), "{k:?}");
    assert!(find(&off, "ClusterRole", "dumpwatch-edit").is_err());
    assert!(find(&off, "DumpStore", "team").is_err());
}
