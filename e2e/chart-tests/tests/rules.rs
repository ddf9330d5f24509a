//! The alert rules with the real promtool: `check rules` on the shipped file, `test rules` with
//! synthetic series (when each alert fires and when it must not), and the rendered annotations.

use chart_tests::{Value, chart_dir};
use harness::promtool;

fn rules_file() -> String {
    chart_dir().join("rules/dumpwatch.rules.yaml").display().to_string()
}

fn rules() -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap()
}

#[test]
fn promtool_checks_the_shipped_rules() {
    let out = promtool(&["check", "rules", &rules_file()]).unwrap();
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
}

/// Timing and labels: rules.test.yaml runs against a copy of the rules without annotations, so
/// runbook wording can change without touching the expectations.
#[test]
fn promtool_unit_tests_fire_when_they_should() {
    let mut rules = rules();
    for group in rules["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dumpwatch.rules.no-annotations.json"), serde_json::to_vec_pretty(&rules).unwrap())
        .unwrap();
    let test = dir.path().join("rules.test.yaml");
    std::fs::copy(chart_dir().join("tests/rules.test.yaml"), &test).unwrap();
    let out = promtool(&["test", "rules", &test.display().to_string()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The annotations as the on-call engineer reads them, on the shipped file itself.
#[test]
fn promtool_renders_the_deadlock_runbook() {
    let test = chart_dir().join("tests/rules-annotations.test.yaml");
    let out = promtool(&["test", "rules", &test.display().to_string()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A negative control: the unit tests can fail. The same expectations against rules whose deadlock
/// alert waits longer (`for: 1m`) must fail at 30 s.
#[test]
fn promtool_unit_tests_can_fail() {
    let text = std::fs::read_to_string(rules_file()).unwrap();
    assert!(text.contains("for: 15s"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("rules/dumpwatch.rules.yaml"), text.replacen("for: 15s", "for: 1m", 1)).unwrap();
    let test = dir.path().join("tests/rules-annotations.test.yaml");
    std::fs::copy(chart_dir().join("tests/rules-annotations.test.yaml"), &test).unwrap();
    let err = promtool(&["test", "rules", &test.display().to_string()]).unwrap_err().to_string();
    assert!(err.contains("FAILED"), "{err}");
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_that_starts_with_the_snapshots() {
    let rules = rules();
    let mut alerts = Vec::new();
    for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let name = rule["alert"].as_str().unwrap();
        alerts.push(name.to_string());
        assert!(["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{name}");
        for key in ["summary", "description", "runbook"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{name}: {key}");
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap();
        assert!(runbook.starts_with("What it means:"), "{name}: {runbook}");
        assert!(runbook.contains("kubectl get dsnap") && runbook.contains("kubectl describe dsnap"), "{name}");
    }
    assert_eq!(
        alerts,
        ["DotnetDeadlockDetected", "DotnetMemoryLeakSuspected", "DotnetHeapGrowthSustained", "DumpwatchCaptureFailing"]
    );
}
