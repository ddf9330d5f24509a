//! One watched process: one EventPipe session (System.Runtime counters at the policy interval,
//! plus contention events on .NET 8+ for the live wait-for graph), metrics, trigger evaluation
//! and capture decisions. Captures run in their own task so the session keeps being read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use analysis::wait_for::{Deadlock, DeadlockKey, WaitForConfig, WaitForGraph};
use api::{CaptureKind, DumpPolicySpec, TriggerKind};
use diag::contention::ContentionTracker;
use diag::counters::{CounterSample, SYSTEM_RUNTIME, sample_from_event};
use diag::exceptions::{ExceptionLog, Thrown};
use diag::protocol::{Provider, SessionConfig};
use diag::session::TraceSession;
use nettrace::{Event, TraceInfo};

use crate::Error;
use crate::capture::{self, Target};
use crate::commit::{self, Job};
use crate::limits::{Asker, History};
use crate::metric_triggers::{MetricEngine, Observation, Sources};
use crate::metrics::{Metrics, Proc, TriggerLabels};
use crate::shared::{KnownProcess, Shared, lock};
use crate::triggers::{Engine, Firing, Values};

/// The one session per process. Contention needs .NET 8 (ContentionStart v2 names the owner).
pub fn session_config(interval: f64, contention: bool) -> SessionConfig {
    let mut cfg = diag::counters::session_config(&[SYSTEM_RUNTIME], interval);
    if contention {
        // Stacks stay on: the waiters' stacks are the evidence, and turning stack walks off
        // needs CollectTracing3, which .NET 8.0 answers with 'unknown command'.
        cfg.providers.push(Provider::new(
            nettrace::events::RUNTIME_PROVIDER,
            nettrace::events::keywords::CONTENTION,
            4,
        ));
    }
    cfg
}

/// The session for `policy`: [`session_config`] with the metric triggers' `extra` providers
/// ([`Sources::providers`]), plus the exception events when the policy has an exception trigger
/// or capture.
fn config_for(policy: &DumpPolicySpec, contention: bool, extra: Vec<Provider>) -> SessionConfig {
    let mut cfg = session_config(policy.counter_interval.as_secs_f64(), contention);
    cfg.providers.extend(extra);
    if policy.watches_exceptions() {
        crate::exceptions::add_to_session(&mut cfg);
    }
    cfg
}

/// Watch `target` until it goes away, then release everything that was published for it.
/// Returns whether the session could start at all.
pub async fn watch(shared: Arc<Shared>, target: Target) -> bool {
    let labels = target.labels();
    shared.metrics.watched.inc();
    let mut started = false;
    let snapshots = tokio::task::spawn_local(crate::heap_growth::run(shared.clone(), target.clone()));
    let outcome = run(&shared, &target, &mut started).await;
    snapshots.abort();
    match outcome {
        Ok(()) => tracing::info!(pid = target.pid, process = %target.name, "process went away"),
        Err(e) if started => tracing::warn!(pid = target.pid, process = %target.name, error = %e, "stopped watching"),
        Err(e) => tracing::debug!(pid = target.pid, process = %target.name, error = %e, "cannot watch"),
    }
    shared.metrics.remove_process(&labels);
    shared.metrics.watched.dec();
    started
}

async fn run(shared: &Arc<Shared>, target: &Target, started: &mut bool) -> Result<(), Error> {
    let mut policy_rx = shared.policy.clone();
    let mut policy = policy_rx.borrow_and_update().clone();
    let live = target.runtime_major().is_some_and(|m| m >= 8);
    let labels = target.labels();
    let process = Some((target.name.as_str(), target.command_line.as_str()));
    let mut engine = Engine::for_process(&policy, process);
    // Our own id for the app's metrics session: its events name it, another tool's do not.
    let meter_session = format!("dumpwatch-{}-{}", target.pid, (crate::shared::unix_now() * 1000.0) as u64);
    let mut sources = Sources::of(&policy, |i| engine.applies(i));
    let config = |policy: &DumpPolicySpec, sources: &Sources| {
        let interval = policy.counter_interval.as_secs_f64();
        let (extra, unavailable) = sources.providers(interval, &meter_session, target.runtime_major());
        if let Some(why) = unavailable {
            tracing::warn!(pid = target.pid, runtime = ?target.runtime_version, "{why}");
        }
        config_for(policy, live, extra)
    };
    let mut session = TraceSession::start(&target.client, &config(&policy, &sources)).await?;
    *started = true;
    tracing::info!(pid = target.pid, process = %target.name, runtime = ?target.runtime_version, "watching");
    let known = KnownProcess { name: target.name.clone(), runtime_version: target.runtime_version.clone() };
    shared.remember_process(target.ns_pid, known);
    if policy.triggers.iter().any(|t| t.kind == TriggerKind::Crash)
        && let (Some(v), Some(dac)) = (&target.runtime_version, target.process.as_ref().and_then(|p| p.dac_path()))
    {
        crate::crash::remember_dac(shared.storage.root(), v, &dac);
    }
    if !live {
        tracing::warn!(
            pid = target.pid,
            runtime = ?target.runtime_version,
            "live deadlock detection is unavailable before .NET 8 (contention events do not name the owner); \
             deadlocks are found from dumps taken on the policy's stall triggers"
        );
        shared.metrics.no_live_deadlock.get_or_create(&labels).set(1.0);
    } else {
        shared.metrics.deadlocked.get_or_create(&labels).set(0.0);
    }
    shared.metrics.publish_zeros(&policy, &labels);
    let mut metric_engine = MetricEngine::new(&policy, |i| engine.applies(i), &meter_session);
    let mut observations: Vec<Observation> = Vec::new();
    let mut meter_problem: Option<String> = None;
    let new_tracker = || {
        let config = WaitForConfig { confirm_window: Duration::from_millis(500), ..Default::default() };
        // Only the confirm window differs from the defaults, whose caps are what `new` checks.
        ContentionTracker::new(WaitForGraph::new(config).expect("the default caps are valid"))
    };
    let mut tracker = new_tracker();
    let mut contentions_published = 0;
    let mut values = Values::default();
    let mut reported: HashSet<DeadlockKey> = HashSet::new();
    let history = Arc::new(Mutex::new(History::default()));
    let mut on_demand = shared.on_demand.subscribe();
    let mut samples: Vec<CounterSample> = Vec::new();
    // (firing, live finding, the DumpSnapshot an on-demand capture answers)
    let mut firings: Vec<(Firing, Option<serde_json::Value>, Option<String>)> =
        startup(shared, target, &policy, &engine).await.into_iter().map(|f| (f, None, None)).collect();
    let mut exceptions = crate::exceptions::Exceptions::new(&policy, |i| engine.applies(i));
    let mut thrown: Vec<Thrown> = Vec::new();
    loop {
        {
            let mut sink = |info: &TraceInfo, ev: &Event<'_>| {
                if let Some(s) = sample_from_event(info, ev) {
                    // Only System.Runtime's counters are the built-in metrics: an app's own
                    // EventSource may well name a counter `cpu-usage` too.
                    if s.provider == SYSTEM_RUNTIME {
                        samples.push(s);
                    } else {
                        observations.push(Observation::Counter(s));
                    }
                } else if ev.metadata.provider == diag::meters::METRICS_PROVIDER {
                    match diag::meters::decode(ev) {
                        Ok(Some(diag::meters::MeterEvent::Sample(m))) => observations.push(Observation::Meter(m)),
                        Ok(Some(diag::meters::MeterEvent::Problem { session_id, what }))
                            if session_id.is_empty() || session_id == meter_session =>
                        {
                            meter_problem = Some(what)
                        }
                        Ok(_) => {}
                        Err(e) => meter_problem = Some(e.to_string()),
                    }
                } else if let Some(t) = Thrown::from_event(info, ev) {
                    match t {
                        Ok(t) => thrown.push(t),
                        Err(e) => tracing::debug!(pid = target.pid, error = %e, "malformed ExceptionThrown event"),
                    }
                } else if live {
                    tracker.on_event(info, ev);
                }
            };
            tokio::select! {
                more = session.pump(&mut sink) => if !more? { return Ok(()) },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                changed = policy_rx.changed() => {
                    if changed.is_err() { return Ok(()) }
                    let new = policy_rx.borrow_and_update().clone();
                    engine = Engine::for_process(&new, process);
                    let new_sources = Sources::of(&new, |i| engine.applies(i));
                    let restart = new.counter_interval != policy.counter_interval
                        || new.watches_exceptions() != policy.watches_exceptions()
                        || new_sources != sources;
                    if restart {
                        // The interval and the providers are session arguments: restart the session.
                        let _ = session.stop().await;
                        session = TraceSession::start(&target.client, &config(&new, &new_sources)).await?;
                        sources = new_sources;
                        tracker = new_tracker();
                        contentions_published = 0;
                        reported.clear();
                    }
                    metric_engine = MetricEngine::new(&new, |i| engine.applies(i), &meter_session);
                    exceptions.set_policy(&new, |i| engine.applies(i));
                    shared.metrics.publish_zeros(&new, &labels);
                    policy = new;
                }
                req = on_demand.recv() => if let Ok(req) = req && req.wants(target.pid, target.ns_pid) {
                    let f = engine.event(&policy, TriggerKind::OnDemand, 1.0, &req.source);
                    firings.extend(f.into_iter().map(|f| (f, None, req.snapshot.clone())));
                },
            }
        }
        if !samples.is_empty() {
            for s in samples.drain(..) {
                apply_sample(&shared.metrics, &labels, &mut values, &s);
            }
            let unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            firings.extend(engine.evaluate(&policy, &values, shared.now(), unix).into_iter().map(|f| (f, None, None)));
        }
        if !observations.is_empty() {
            let f = metric_engine.observe(&policy, &observations, shared.now());
            firings.extend(f.into_iter().map(|f| (f, None, None)));
            observations.clear();
        }
        if let Some(what) = meter_problem.take() {
            tracing::warn!(pid = target.pid, process = %target.name, problem = %what, "metrics session");
        }
        for t in thrown.drain(..) {
            firings.extend(exceptions.on_thrown(&policy, t).into_iter().map(|f| (f, None, None)));
        }
        if live {
            let seen = tracker.contentions;
            shared.metrics.contention_events.get_or_create(&labels).inc_by(seen - contentions_published);
            contentions_published = seen;
            let deadlocks = tracker.deadlocks();
            let threads: usize = deadlocks.iter().map(|d| d.cycle.len()).sum();
            shared.metrics.deadlocked.get_or_create(&labels).set(threads as f64);
            for d in deadlocks {
                if reported.insert(d.key()) {
                    let finding = deadlock_finding(target, &d);
                    tracing::warn!(pid = target.pid, process = %target.name, locks = %d.key(), threads = d.cycle.len(),
                        victims = d.victims.len(), "deadlock detected");
                    shared.push_finding(finding.clone());
                    let detail = format!("{} threads on a cycle over locks {}", d.cycle.len(), d.key());
                    let f = engine.event(&policy, TriggerKind::Deadlock, d.cycle.len() as f64, &detail);
                    firings.extend(f.into_iter().map(|f| (f, Some(finding.clone()), None)));
                    tokio::task::spawn_local(symbolize_finding(shared.clone(), target.clone(), d));
                }
            }
        }
        for (f, finding, snapshot) in firings.drain(..) {
            fire(shared, target, &policy, &values, &history, &exceptions.log, f, finding, snapshot);
        }
    }
}

/// The `startup` triggers for this process, unless they already fired for this runtime (a
/// watcher restarted on the same runtime). The runtime's instance cookie tells runtimes apart;
/// without an answer they fire (a capture too many is held by the limits, a missed start is lost).
async fn startup(shared: &Shared, target: &Target, policy: &DumpPolicySpec, engine: &Engine) -> Vec<Firing> {
    let firings = crate::metric_triggers::startup_firings(policy, |i| engine.applies(i));
    if firings.is_empty() {
        return firings;
    }
    match target.client.process_info().await {
        Ok(info) if !shared.startups.first_time(info.runtime_cookie) => Vec::new(),
        Ok(_) => firings,
        Err(e) => {
            tracing::debug!(pid = target.pid, error = %e, "no runtime cookie: startup triggers fire without one");
            firings
        }
    }
}

/// Counter name → metric and trigger value. Sizes come in MB (10^6, as System.Runtime
/// divides), CPU in percent of the machine, rates as the increment over the interval.
fn apply_sample(m: &Metrics, p: &Proc, v: &mut Values, s: &CounterSample) {
    let per_sec = |x: f64| if s.interval_sec > 0.0 { x / s.interval_sec as f64 } else { x };
    match s.name.as_str() {
        "gc-heap-size" => {
            v.gc_heap_bytes = Some(s.value * 1e6);
            m.gc_heap.get_or_create(p).set(s.value * 1e6);
        }
        "working-set" => {
            v.working_set_bytes = Some(s.value * 1e6);
            m.working_set.get_or_create(p).set(s.value * 1e6);
        }
        "cpu-usage" => {
            v.cpu_ratio = Some(s.value / 100.0);
            m.cpu.get_or_create(p).set(s.value / 100.0);
        }
        "threadpool-thread-count" => {
            v.threadpool_threads = Some(s.value);
            m.tp_threads.get_or_create(p).set(s.value);
        }
        "threadpool-queue-length" => {
            v.threadpool_queue = Some(s.value);
            m.tp_queue.get_or_create(p).set(s.value);
        }
        "monitor-lock-contention-count" => {
            v.contentions_per_sec = Some(per_sec(s.value));
            m.contention.get_or_create(p).inc_by(s.value.max(0.0));
        }
        "exception-count" => {
            v.exceptions_per_sec = Some(per_sec(s.value));
            m.exceptions.get_or_create(p).inc_by(s.value.max(0.0));
        }
        "alloc-rate" => {
            m.allocated.get_or_create(p).inc_by(s.value.max(0.0));
        }
        _ => {}
    }
}

fn deadlock_finding(t: &Target, d: &Deadlock) -> serde_json::Value {
    let hex = |s: &[u64]| s.iter().map(|ip| format!("{ip:#x}")).collect::<Vec<_>>();
    serde_json::json!({
        "kind": "deadlock",
        "pid": t.pid,
        "process": t.name,
        "runtime_version": t.runtime_version,
        "locks": d.key().to_string(),
        "cycle": d.cycle.iter().map(|e| serde_json::json!({
            "thread": e.waiter_tid, "waits_for_lock": e.lock_id, "lock_object": e.lock_object,
            "held_by": e.owner_tid, "stack": hex(&e.waiter_stack),
        })).collect::<Vec<_>>(),
        "victims": d.victims.iter().map(|v| serde_json::json!({
            "thread": v.tid, "waits_for_lock": v.lock_id, "blocked_on": v.blocked_on, "stack": hex(&v.stack),
        })).collect::<Vec<_>>(),
        "symbolized": false,
    })
}

/// Name the frames (a rundown session), then publish the finding again with method names.
async fn symbolize_finding(shared: Arc<Shared>, t: Target, d: Deadlock) {
    let Ok(methods) = diag::stacks::method_map(&t.client, Duration::from_secs(30)).await else { return };
    let mut f = deadlock_finding(&t, &d);
    for (i, e) in d.cycle.iter().enumerate() {
        f["cycle"][i]["stack"] = serde_json::json!(methods.symbolize(&e.waiter_stack));
    }
    for (i, v) in d.victims.iter().enumerate() {
        f["victims"][i]["stack"] = serde_json::json!(methods.symbolize(&v.stack));
    }
    f["symbolized"] = true.into();
    shared.push_finding(f);
}

/// Log and count a firing, then capture if the limits allow.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn fire(
    shared: &Arc<Shared>,
    t: &Target,
    policy: &Arc<DumpPolicySpec>,
    v: &Values,
    history: &Arc<Mutex<History>>,
    recent: &ExceptionLog,
    firing: Firing,
    finding: Option<serde_json::Value>,
    snapshot: Option<String>,
) {
    tracing::warn!(pid = t.pid, process = %t.name, trigger = %firing.trigger, index = ?firing.index, value = firing.value,
        threshold = ?firing.threshold, detail = %firing.detail, "trigger fired");
    let tl = TriggerLabels { pid: t.pid.to_string(), process: t.name.clone(), trigger: firing.trigger.name().into() };
    shared.metrics.triggers.get_or_create(&tl).inc();
    let kinds = firing.index.map(|i| policy.capture_kinds(i)).unwrap_or_else(|| policy.capture.kinds.clone());
    let asker = if firing.trigger == TriggerKind::OnDemand { Asker::Person } else { Asker::Trigger };
    let mut job = Job {
        process: t.entry(),
        firing,
        kinds: kinds.iter().map(|k| k.name()).collect(),
        dump_type: capture::dump_type(policy.capture.dump_type).name(),
        estimate: 0,
        snapshot,
    };
    let admitted = {
        let mut h = lock(history);
        let estimate = estimate(t, policy, v, &kinds, h.last_gcdump_bytes);
        shared.admit_capture(&policy.limits, h.in_progress, estimate, asker).map(|()| {
            h.in_progress = true;
            estimate
        })
    };
    match admitted {
        Ok(estimate) => job.estimate = estimate,
        Err(r) => {
            tracing::info!(pid = t.pid, trigger = %job.firing.trigger, reason = %r, "capture refused");
            count(&shared.metrics, &kinds, r.label());
            // A person waits on their DumpSnapshot: tell them now, not at the operator's timeout.
            // A trigger refused by the limits is the limits working, not a failure.
            if job.snapshot.is_some() {
                commit::report_failure(shared, &job, format!("capture refused: {r}"));
            }
            return;
        }
    }
    let exceptions = if kinds.contains(&CaptureKind::Exceptions) { recent.last(usize::MAX) } else { Vec::new() };
    let req = capture::Request {
        kinds,
        exceptions,
        dump_type: policy.capture.dump_type,
        finding,
        min_free_bytes: policy.limits.min_free_disk.value() as u64,
        top_types: policy.capture.top_types as usize,
        trace_duration: Duration::from_secs_f64(policy.capture.trace_duration.as_secs_f64()),
        exceptions_seen: recent.total,
    };
    let (shared, t, history) = (shared.clone(), t.clone(), history.clone());
    tokio::task::spawn_local(async move {
        let stored = commit::capture(&shared, job, move |dir| async move { capture::take(&t, &dir, &req).await }).await;
        let mut h = lock(&history);
        if let Some(f) = stored.as_ref().and_then(|c| c.manifest.files.iter().find(|f| f.name == "heap.nettrace")) {
            h.last_gcdump_bytes = f.bytes;
        }
        h.in_progress = false;
    });
}

fn estimate(t: &Target, policy: &DumpPolicySpec, v: &Values, kinds: &[CaptureKind], last_gcdump: u64) -> u64 {
    kinds
        .iter()
        .map(|k| match k {
            CaptureKind::Dump => {
                t.estimate_dump_bytes(capture::dump_type(policy.capture.dump_type), v.working_set_bytes)
            }
            // The raw heap stream runs at about half the heap size (88 MB for a 2 M-object heap).
            // the last snapshot of this process, with a margin for growth, is better still.
            CaptureKind::Gcdump => ((v.gc_heap_bytes.unwrap_or(0.0) / 2.0) as u64 + (1 << 20)).max(last_gcdump / 4 * 5),
            CaptureKind::Stacks => 1 << 20,
            // Measured: ~100 KiB of raw trace per second for a small app; room for a busy one.
            CaptureKind::Trace => (1 << 20) + (policy.capture.trace_duration.as_secs_f64() * 1024.0 * 1024.0) as u64,
            // A named stack of 30 frames and a message: about 4 KiB an exception.
            CaptureKind::Exceptions => (64 << 10) + u64::from(policy.capture.exceptions_last) * (4 << 10),
        })
        .sum()
}

fn count(m: &Metrics, kinds: &[CaptureKind], result: &str) {
    for k in kinds {
        m.captures.get_or_create(&crate::metrics::CaptureLabels { kind: k.name().into(), result: result.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_gets_the_exception_keyword_once() {
        let mut with_contention = session_config(1.0, true);
        crate::exceptions::add_to_session(&mut with_contention);
        let runtime: Vec<_> =
            with_contention.providers.iter().filter(|p| p.name == nettrace::events::RUNTIME_PROVIDER).collect();
        assert_eq!(runtime.len(), 1);
        assert_eq!(runtime[0].keywords, nettrace::events::CONTENTION | nettrace::events::EXCEPTION);
        assert_eq!(runtime[0].level, 4);
        let mut counters_only = session_config(1.0, false);
        crate::exceptions::add_to_session(&mut counters_only);
        let added = counters_only.providers.last().unwrap();
        assert_eq!((added.keywords, added.level), (nettrace::events::EXCEPTION, 2));
    }
}
