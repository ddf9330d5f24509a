//! Debian's Prometheus scrapes a real process's /metrics through the harness, evaluates a
//! recording rule and an alert (also checked offline with promtool), and hands the alert to
//! Alertmanager; moto serves S3 with a bucket.

use std::process::Command;
use std::time::Duration;

use harness::proc::Proc;
use harness::{Alertmanager, Prometheus, S3Server, free_port, promtool, wait_for};

const RULES: &str = r#"
groups:
- name: dumpwatch-test
  interval: 1s
  rules:
  - record: dumpwatch:test_value:doubled
    expr: dumpwatch_test_value * 2
  - alert: TestValueHigh
    expr: dumpwatch_test_value > 5
    labels: {severity: warning}
    annotations: {summary: "the test value is {{ $value }}"}
"#;

const RULE_TESTS: &str = r#"
rule_files: [rules.yml]
evaluation_interval: 1s
tests:
- interval: 1s
  input_series:
  - series: 'dumpwatch_test_value{job="test"}'
    values: '3 3 9 9'
  promql_expr_test:
  - expr: dumpwatch:test_value:doubled
    eval_time: 0s
    exp_samples: [{labels: 'dumpwatch:test_value:doubled{job="test"}', value: 6}]
  alert_rule_test:
  - eval_time: 1s
    alertname: TestValueHigh
    exp_alerts: []
  - eval_time: 3s
    alertname: TestValueHigh
    exp_alerts:
    - exp_labels: {severity: warning, job: test}
      exp_annotations: {summary: "the test value is 9"}
"#;

fn metrics(value: u32) -> String {
    format!(
        "# HELP dumpwatch_test_value A test gauge.\n# TYPE dumpwatch_test_value gauge\ndumpwatch_test_value {value}\n"
    )
}

#[test]
fn prometheus_scrapes_a_process_and_fires_an_alert() {
    // Offline rule checks with promtool.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    std::fs::write(dir.path().join("rules_test.yml"), RULE_TESTS).unwrap();
    promtool(&["check", "rules", &dir.path().join("rules.yml").display().to_string()]).expect("promtool check rules");
    promtool(&["test", "rules", &dir.path().join("rules_test.yml").display().to_string()])
        .expect("promtool test rules");

    // A real process serving /metrics (a static file we rewrite): python's http.server.
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("metrics"), metrics(3)).unwrap();
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"]).arg(&www);
    let _server = Proc::spawn("metrics-server", cmd, &dir.path().join("server.log")).unwrap();

    let am = Alertmanager::start(
        "route: {receiver: 'null', group_wait: 1s, group_interval: 1s}\nreceivers: [{name: 'null'}]\n",
    )
    .expect("alertmanager starts");
    let prom =
        Prometheus::start(&[format!("127.0.0.1:{port}")], RULES, Some(&am.address())).expect("prometheus starts");

    let up = prom
        .wait_for_samples("up{job=\"test\"} == 1", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()));
    assert_eq!(up[0]["metric"]["instance"], format!("127.0.0.1:{port}"));
    let doubled = prom.wait_for_samples("dumpwatch:test_value:doubled == 6", Duration::from_secs(30)).unwrap();
    assert_eq!(doubled[0]["value"][1], "6");
    assert!(prom.query("ALERTS{alertname=\"TestValueHigh\"}").unwrap().as_array().unwrap().is_empty());
    let rules = prom.api("rules").unwrap();
    assert_eq!(rules["groups"][0]["rules"].as_array().unwrap().len(), 2);

    // The process's value rises: the alert fires in Prometheus and reaches Alertmanager.
    std::fs::write(www.join("metrics"), metrics(9)).unwrap();
    prom.wait_for_samples("ALERTS{alertname=\"TestValueHigh\", alertstate=\"firing\"}", Duration::from_secs(30))
        .unwrap();
    let alerts = wait_for("the alert in Alertmanager", Duration::from_secs(30), || {
        let a = am.alerts()?;
        Ok(a.as_array().is_some_and(|a| !a.is_empty()).then_some(a))
    })
    .unwrap();
    assert_eq!(alerts[0]["labels"]["alertname"], "TestValueHigh");
    assert_eq!(alerts[0]["annotations"]["summary"], "the test value is 9");
}

#[test]
fn s3_server_stores_objects() {
    let s3 = S3Server::start("dumps").expect("moto starts");
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("core");
    std::fs::write(&file, &body).unwrap();
    let url = format!("{}/{}/pods/core.1", s3.endpoint(), s3.bucket());
    // Signed requests (curl's SigV4): moto refuses anonymous reads of private objects.
    let curl = || {
        let mut c = Command::new("curl");
        c.args(["-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"]).arg(format!(
            "{}:{}",
            S3Server::ACCESS_KEY,
            S3Server::SECRET_KEY
        ));
        c
    };
    let put = curl()
        .args(["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .status()
        .unwrap();
    assert!(put.success());
    let got = curl().arg(&url).output().unwrap();
    assert!(got.status.success());
    assert_eq!(got.stdout, body, "the object reads back byte for byte");
    let list =
        Command::new("curl").args(["-sf", &format!("{}/{}?list-type=2", s3.endpoint(), s3.bucket())]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("<Key>pods/core.1</Key>"));
}
