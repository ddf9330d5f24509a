use super::*;
use crate::shared::Startups;
use crate::triggers::{Engine, Values};

fn policy(yaml: &str) -> DumpPolicySpec {
    DumpPolicySpec::from_yaml(yaml).unwrap()
}

fn counter(provider: &str, name: &str, value: f64, is_rate: bool) -> Observation {
    Observation::Counter(CounterSample {
        provider: provider.into(),
        name: name.into(),
        display_name: String::new(),
        units: String::new(),
        value,
        is_rate,
        interval_sec: 2.0,
        timestamp_ns: 0,
    })
}

fn meter(session: &str, instrument: &str, value: MeterValue) -> Observation {
    Observation::Meter(MeterSample {
        session_id: session.into(),
        meter: "App".into(),
        instrument: instrument.into(),
        unit: String::new(),
        tags: String::new(),
        value,
    })
}

fn fired(e: &mut MetricEngine, p: &DumpPolicySpec, batch: &[Observation], now: f64) -> Vec<usize> {
    e.observe(p, batch, now).into_iter().filter_map(|f| f.index).collect()
}

#[test]
fn a_counter_at_42_crosses_40_but_not_50() {
    let p = policy(
        "triggers:\n\
         - {type: metric, metric: {provider: App.Queue, counter: queue-length}, above: 40, for: 2s}\n\
         - {type: metric, metric: {provider: App.Queue, counter: queue-length}, above: 50}\n",
    );
    let mut e = MetricEngine::new(&p, |_| true, "s");
    let q = |v| [counter("App.Queue", "queue-length", v, false)];
    assert!(fired(&mut e, &p, &q(42.0), 0.0).is_empty(), "not yet 2 s");
    assert!(fired(&mut e, &p, &q(42.0), 1.0).is_empty());
    let f = e.observe(&p, &q(42.0), 2.0);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].index, f[0].trigger, f[0].value, f[0].threshold),
        (Some(0), TriggerKind::Metric, 42.0, Some(40.0))
    );
    assert_eq!(f[0].detail, "App.Queue/queue-length above 40 for 2s");
    for t in 3..20 {
        assert!(fired(&mut e, &p, &q(42.0), t as f64).is_empty(), "fires once while high, never above 50");
    }
    assert!(fired(&mut e, &p, &[counter("Other", "queue-length", 99.0, false)], 20.0).is_empty(), "other provider");
    assert!(fired(&mut e, &p, &q(37.0), 21.0).is_empty(), "below the default clear level (36): still disarmed");
    assert!(fired(&mut e, &p, &q(35.0), 22.0).is_empty(), "re-armed");
    assert!(fired(&mut e, &p, &q(42.0), 23.0).is_empty());
    assert_eq!(fired(&mut e, &p, &q(42.0), 25.0), [0]);
}

#[test]
fn below_fires_when_the_value_drops_and_rearms_above_clear_above() {
    let p = policy("triggers: [{type: metric, metric: {meter: App, instrument: queue-length}, below: 5, for: 1s}]");
    let mut e = MetricEngine::new(&p, |_| true, "s");
    let g = |v| [meter("s", "queue-length", MeterValue::Gauge(v))];
    assert!(fired(&mut e, &p, &g(42.0), 0.0).is_empty());
    assert!(fired(&mut e, &p, &g(2.0), 1.0).is_empty());
    let f = e.observe(&p, &g(2.0), 2.0);
    assert_eq!((f.len(), f[0].value, f[0].threshold), (1, 2.0, Some(5.0)));
    assert_eq!(f[0].detail, "App/queue-length below 5 for 1s");
    assert!(fired(&mut e, &p, &g(5.4), 3.0).is_empty(), "under the default clearAbove (5.5): disarmed");
    assert!(fired(&mut e, &p, &g(1.0), 4.0).is_empty());
    assert!(fired(&mut e, &p, &g(6.0), 5.0).is_empty(), "re-armed");
    assert!(fired(&mut e, &p, &g(1.0), 6.0).is_empty());
    assert_eq!(fired(&mut e, &p, &g(1.0), 7.0), [0]);
    // Another tool's session publishes the same instrument: not ours to judge.
    let mut e = MetricEngine::new(&p, |_| true, "s");
    assert!(fired(&mut e, &p, &[meter("theirs", "queue-length", MeterValue::Gauge(0.0))], 0.0).is_empty());
    assert!(fired(&mut e, &p, &[meter("theirs", "queue-length", MeterValue::Gauge(0.0))], 9.0).is_empty());
}

#[test]
fn a_histogram_is_judged_by_its_percentile() {
    let p = policy(
        "triggers:\n\
         - {type: metric, metric: {meter: App, instrument: request-duration}, above: 200}\n\
         - {type: metric, metric: {meter: App, instrument: request-duration, percentile: 50}, above: 200}\n",
    );
    let mut e = MetricEngine::new(&p, |_| true, "s");
    let h =
        MeterValue::Histogram { quantiles: vec![(0.5, 20.0), (0.95, 250.0), (0.99, 250.0)], count: None, sum: None };
    assert_eq!(fired(&mut e, &p, &[meter("s", "request-duration", h)], 0.0), [0], "p95 is 250, p50 is 20");
    let empty = MeterValue::Histogram { quantiles: vec![], count: Some(0), sum: Some(0.0) };
    assert!(fired(&mut e, &p, &[meter("s", "request-duration", empty)], 1.0).is_empty(), "no recordings: no value");
}

#[test]
fn rates_are_per_second_and_tag_sets_take_the_worst() {
    let src = MetricRef::EventCounter { provider: "P", counter: "c" };
    assert_eq!(value_of(src, &counter("P", "c", 10.0, true), "s", 1.0), Some(5.0), "10 over a 2 s interval");
    assert_eq!(value_of(src, &counter("P", "c", 10.0, false), "s", 1.0), Some(10.0));
    let inst = MetricRef::Instrument { meter: "App", instrument: "requests", percentile: 95 };
    let rate = meter("s", "requests", MeterValue::Rate { delta: 30.0, total: Some(300.0) });
    assert_eq!(value_of(inst, &rate, "s", 3.0), Some(10.0));
    let updown = |value| meter("s", "requests", MeterValue::UpDown { delta: 1.0, value });
    assert_eq!(value_of(inst, &updown(Some(7.0)), "s", 1.0), Some(7.0));
    assert_eq!(value_of(inst, &updown(None), "s", 1.0), None, ".NET 7 publishes no current value");

    let p = policy("triggers: [{type: metric, metric: {meter: App, instrument: q}, above: 40}]");
    let mut e = MetricEngine::new(&p, |_| true, "s");
    let batch = [meter("s", "q", MeterValue::Gauge(3.0)), meter("s", "q", MeterValue::Gauge(41.0))];
    assert_eq!(fired(&mut e, &p, &batch, 0.0), [0], "the worst tag set counts");
}

#[test]
fn built_in_metrics_take_below_and_every_trigger_takes_a_process_filter() {
    let p = policy(
        "triggers:\n\
         - {type: threadPoolQueue, below: 1, for: 1s}\n\
         - {type: gcHeapBytes, above: 100, processes: [\"Billing*\"]}\n\
         - {type: deadlock, processes: [\"*--role=worker*\"]}\n\
         - {type: startup, processes: [Orders.Api]}\n\
         - {type: metric, metric: {meter: App, instrument: q}, above: 1, processes: [Billing]}\n",
    );
    let mut e = Engine::for_process(&p, Some(("Orders.Api", "dotnet Orders.Api.dll --role=web")));
    let v = |q: f64| Values { threadpool_queue: Some(q), gc_heap_bytes: Some(1e9), ..Default::default() };
    assert!(e.evaluate(&p, &v(0.0), 0.0, 0).is_empty());
    let f = e.evaluate(&p, &v(0.0), 1.0, 0);
    assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), [Some(0)], "the heap trigger is for Billing only");
    assert_eq!(f[0].detail, "threadPoolQueue below 1 for 1s");
    assert!(e.event(&p, TriggerKind::Deadlock, 2.0, "cycle").is_empty(), "not a worker");
    let worker = Engine::for_process(&p, Some(("Orders.Api", "dotnet Orders.Api.dll --role=worker")));
    assert_eq!(worker.event(&p, TriggerKind::Deadlock, 2.0, "cycle").len(), 1);
    assert_eq!(startup_firings(&p, |i| e.applies(i)).len(), 1);
    let billing = Engine::for_process(&p, Some(("Billing", "dotnet Billing.dll")));
    assert!(startup_firings(&p, |i| billing.applies(i)).is_empty());
    assert_eq!(Sources::of(&p, |i| e.applies(i)), Sources::default(), "no session for a filtered-out meter");
    let mut m = MetricEngine::new(&p, |i| e.applies(i), "s");
    assert!(fired(&mut m, &p, &[meter("s", "q", MeterValue::Gauge(9.0))], 0.0).is_empty());
    let mut m = MetricEngine::new(&p, |i| billing.applies(i), "s");
    assert_eq!(fired(&mut m, &p, &[meter("s", "q", MeterValue::Gauge(9.0))], 0.0), [4]);
}

#[test]
fn sources_ask_the_session_for_what_the_triggers_watch() {
    let p = policy(
        "triggers:\n\
         - {type: metric, metric: {provider: App.Queue, counter: queue-length}, above: 40}\n\
         - {type: metric, metric: {provider: App.Queue, counter: other}, above: 40}\n\
         - {type: metric, metric: {provider: System.Runtime, counter: cpu-usage}, above: 40}\n\
         - {type: metric, metric: {meter: App, instrument: request-duration}, above: 200}\n",
    );
    let s = Sources::of(&p, |_| true);
    assert_eq!(s.providers, ["App.Queue"], "System.Runtime is in every session already");
    let (providers, warning) = s.providers(1.0, "dw-7", Some(8));
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!((names, warning), (vec!["App.Queue", "System.Diagnostics.Metrics"], None));
    assert!(providers[1].arguments.contains("SessionId=dw-7;Metrics=App\\request-duration;RefreshInterval=1"));
    let (providers, warning) = s.providers(1.0, "dw-7", Some(3));
    assert_eq!(providers.len(), 1, "3.1 has EventCounters but no System.Diagnostics.Metrics");
    assert!(warning.unwrap().contains("need .NET 6"));
}

#[test]
fn startup_fires_once_per_runtime_instance() {
    let s = Startups::default();
    assert!(s.first_time([1; 16]));
    assert!(!s.first_time([1; 16]), "the same runtime, watched again");
    assert!(s.first_time([2; 16]), "a restarted runtime");
}
