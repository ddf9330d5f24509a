//! The exception trigger and the exceptions capture against real .NET Core 3.1 and .NET 8
//! workloads: ExceptionThrown exists on both, so both must behave the same.

mod common;

use std::time::Duration;

use common::*;
use testbed::{Runtime, Value};

const S: Duration = Duration::from_secs(1);

/// Three `System.*Timeout*` within a minute fire trigger 0; trigger 1 matches nothing the
/// workload throws and must never fire. Every exception is kept for the capture.
const POLICY: &str = "mode: connect\ncounterInterval: 1s\n\
    triggers:\n\
    - {type: exception, exceptionType: \"System.*Timeout*\", count: 3, window: 1m, capture: [exceptions]}\n\
    - {type: exception, exceptionType: \"App.NeverThrown*\", capture: [stacks]}\n\
    capture: {kinds: [exceptions], exceptionsLast: 50}\nlimits: {cooldown: 1s}\n";

/// The workload throws 5 InvalidOperationExceptions and 2 TimeoutExceptions (no firing), then
/// one more TimeoutException (the firing): one capture, whose `exceptions.json` lists all 8 in
/// order with their messages and the throwing method on top of each stack.
fn the_third_timeout_fires_and_the_capture_lists_every_exception(runtime: Runtime, name: &str) {
    let sc = Sidecar::start(name, POLICY);
    let w = start(&sc, runtime, false, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("the process watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    let fired = || sc.metric("dumpwatch_triggers_total", &[&pid, "trigger=\"exception\""]).unwrap_or(0.0);

    let invalid = w.get("/exceptions?count=5");
    assert_eq!(invalid["method"], "ThrowOne");
    let timeouts = w.get("/exceptions?count=2&type=timeout");
    assert_eq!(
        (timeouts["type"].as_str(), timeouts["method"].as_str()),
        (Some("System.TimeoutException"), Some("ThrowTimeout"))
    );
    // The counters of the same session show the runtime counted all 7: the events before them
    // in the stream were read too.
    sc.wait_for("dotnet_exceptions_total = 7", 15 * S, || {
        sc.metric("dotnet_exceptions_total", &[&pid]).filter(|&v| v == 7.0)
    });
    std::thread::sleep(2 * S);
    assert_eq!(fired(), 0.0, "{runtime:?}: 2 timeouts of 3 and 5 other exceptions must not fire");
    assert!(sc.captures().is_empty(), "{runtime:?}: no capture before the third timeout");

    let last = w.get("/exceptions?count=1&type=timeout");
    let first_chance = last["first_chance_total"].as_u64().unwrap();
    assert_eq!(first_chance, 8, "the workload threw nothing else");
    let dir = sc.wait_for("the exceptions capture", 60 * S, || sc.captures().into_iter().next());
    let m = manifest(&dir);
    assert_eq!(m["trigger"]["trigger"], "exception", "{m:#}");
    assert_eq!(m["trigger"]["index"], 0, "the Timeout trigger, not the one matching nothing: {m:#}");
    let detail = m["trigger"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 exceptions matching \"System.*Timeout*\"") && detail.contains("dumpwatch test timeout #0"),
        "{detail}"
    );

    let doc: Value = serde_json::from_slice(&std::fs::read(dir.join("exceptions.json")).unwrap()).unwrap();
    assert_eq!(doc["exceptions_seen"], first_chance, "{runtime:?}: {doc:#}");
    assert_eq!(doc["frames_unnamed_because"], Value::Null, "{doc:#}");
    let listed = doc["exceptions"].as_array().unwrap();
    let expected: Vec<(&str, String, &str)> = (0..5)
        .map(|i| ("System.InvalidOperationException", format!("dumpwatch test exception #{i}"), "ThrowOne"))
        .chain((0..2).map(|i| ("System.TimeoutException", format!("dumpwatch test timeout #{i}"), "ThrowTimeout")))
        .chain([("System.TimeoutException", "dumpwatch test timeout #0".to_string(), "ThrowTimeout")])
        .collect();
    assert_eq!(listed.len(), expected.len(), "{runtime:?}: {doc:#}");
    for (e, (ty, message, method)) in listed.iter().zip(&expected) {
        assert_eq!((e["type"].as_str().unwrap(), e["message"].as_str().unwrap()), (*ty, message.as_str()), "{e:#}");
        assert_eq!(e["stack"][0], format!("DiagScenarios.ExceptionScenario.{method}(int32)"), "{runtime:?}: {e:#}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e:#}");
        assert!(e["thread"].as_u64().is_some_and(|t| t > 0), "{e:#}");
    }
    assert_eq!(listed[0]["hresult"], "0x80131509", "COR_E_INVALIDOPERATION");
    assert_eq!(listed[7]["hresult"], "0x80131505", "COR_E_TIMEOUT");

    // Nothing else fired, the never-matching trigger included.
    std::thread::sleep(2 * S);
    assert_eq!(fired(), 1.0, "{runtime:?}");
    assert_eq!(sc.captures().len(), 1, "{runtime:?}");
}

#[test]
fn exception_trigger_and_capture_on_net8() {
    the_third_timeout_fires_and_the_capture_lists_every_exception(Runtime::Net8, "exc8");
}

#[test]
fn exception_trigger_and_capture_on_net31() {
    the_third_timeout_fires_and_the_capture_lists_every_exception(Runtime::Net31, "exc31");
}
