//! What a `metric` trigger watches (an app's own EventCounter or `System.Diagnostics.Metrics`
//! instrument), the `processes` filter every trigger may carry, and their rules in words.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Trigger, TriggerKind};

/// The value a `metric` trigger compares: either an EventCounter (`provider` + `counter`, every
/// runtime from .NET Core 3.0) or a `System.Diagnostics.Metrics` instrument (`meter` +
/// `instrument`, .NET 6+; `percentile` for a histogram). Values are in the instrument's own unit
/// (a `%` suffix on the threshold divides by 100, so a counter that reports percent wants a plain
/// number). Rates (an `IncrementingEventCounter`, a `Counter<T>`) are per second; a gauge or an
/// `UpDownCounter<T>` is its current value. When an instrument has several tag combinations, the
/// highest (for `above`) or lowest (for `below`) of them in each interval is compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.provider) && has(self.counter) && !has(self.meter) && !has(self.instrument) && !has(self.percentile)) || (has(self.meter) && has(self.instrument) && !has(self.provider) && !has(self.counter))",
        "message": "metric needs either provider + counter (an EventCounter, e.g. {provider: MyApp.Queue, counter: queue-length}) or meter + instrument (System.Diagnostics.Metrics, e.g. {meter: MyApp, instrument: request-duration, percentile: 95})"
    },
    {
        "rule": "!has(self.percentile) || self.percentile in [50, 95, 99]",
        "message": "metric.percentile must be 50, 95 or 99: the quantiles the runtime publishes for a histogram"
    }
]))]
pub struct MetricSource {
    /// EventSource name publishing the counter (e.g. `MyApp.Queue`, `Microsoft.AspNetCore.Hosting`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub provider: Option<String>,
    /// Counter name within the provider (e.g. `queue-length`, `requests-per-second`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub counter: Option<String>,
    /// `System.Diagnostics.Metrics` Meter name (e.g. `MyApp`); .NET 6 and later.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub meter: Option<String>,
    /// Instrument name within the meter (e.g. `request-duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub instrument: Option<String>,
    /// For a histogram: which quantile of the interval's recordings to compare, 50, 95 or 99
    /// (default 95).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<u8>,
}

/// Where a metric comes from, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricRef<'a> {
    EventCounter { provider: &'a str, counter: &'a str },
    Instrument { meter: &'a str, instrument: &'a str, percentile: u8 },
}

impl MetricSource {
    /// `None` unless exactly one of the two forms is complete.
    pub fn reference(&self) -> Option<MetricRef<'_>> {
        match (&self.provider, &self.counter, &self.meter, &self.instrument) {
            (Some(provider), Some(counter), None, None) if self.percentile.is_none() => {
                Some(MetricRef::EventCounter { provider, counter })
            }
            (None, None, Some(meter), Some(instrument)) => {
                Some(MetricRef::Instrument { meter, instrument, percentile: self.percentile.unwrap_or(95) })
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for MetricRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EventCounter { provider, counter } => write!(f, "{provider}/{counter}"),
            Self::Instrument { meter, instrument, .. } => write!(f, "{meter}/{instrument}"),
        }
    }
}

/// The rules of `metric`, `below`/`clearAbove`, `startup` and `processes`, for
/// [`crate::DumpPolicySpec::problems`].
pub(crate) fn problems(t: &Trigger, at: &str, p: &mut Vec<String>) {
    match (&t.metric, t.kind) {
        (None, TriggerKind::Metric) => p.push(format!(
            "{at}: a metric trigger needs `metric`: either provider + counter (an EventCounter, e.g. metric: \
             {{provider: MyApp.Queue, counter: queue-length}}) or meter + instrument (e.g. metric: {{meter: MyApp, \
             instrument: request-duration, percentile: 95}})"
        )),
        (Some(m), TriggerKind::Metric) => {
            if m.reference().is_none() {
                p.push(format!(
                    "{at}: metric needs either provider + counter (an EventCounter) or meter + instrument \
                     (System.Diagnostics.Metrics), not a mix (got {})",
                    serde_json::to_string(m).unwrap_or_default()
                ));
            }
            if m.percentile.is_some_and(|q| ![50, 95, 99].contains(&q)) {
                p.push(format!("{at}: metric.percentile must be 50, 95 or 99 (the quantiles a histogram publishes)"));
            }
            let empty = [&m.provider, &m.counter, &m.meter, &m.instrument].into_iter().flatten().any(|s| s.is_empty());
            if empty {
                p.push(format!("{at}: metric names must not be empty"));
            }
            // The runtime takes meters and instruments as one `meter\instrument,...` filter string.
            let unsayable = |s: &String| s.contains([';', ',', '=', '"', '\\', '\r', '\n']);
            if [&m.meter, &m.instrument].into_iter().flatten().any(unsayable) {
                p.push(format!(
                    "{at}: a meter or instrument name with ; , = \" \\ or a line break cannot be requested from the runtime"
                ));
            }
        }
        (Some(_), _) => p.push(format!("{at}: `metric` only applies to metric triggers (type: metric)")),
        (None, _) => {}
    }
    if t.kind.compares_a_value() {
        match (t.above, t.below) {
            (None, None) => p.push(format!("{at}: `above` or `below` (the threshold) is required, e.g. above: 40")),
            (Some(_), Some(_)) => {
                p.push(format!("{at}: give one of `above` or `below`, not both (two triggers watch both sides)"))
            }
            _ => {}
        }
        if let (Some(b), Some(c)) = (t.below, t.clear_above)
            && c.value() < b.value()
        {
            p.push(format!("{at}: clearAbove ({c}) must not be below `below` ({b})"));
        }
        if t.clear_below.is_some() && t.above.is_none() {
            p.push(format!("{at}: clearBelow re-arms an `above` trigger; a `below` trigger re-arms with clearAbove"));
        }
        if t.clear_above.is_some() && t.below.is_none() {
            p.push(format!("{at}: clearAbove re-arms a `below` trigger; an `above` trigger re-arms with clearBelow"));
        }
    } else if t.below.is_some() || t.clear_above.is_some() {
        p.push(format!("{at}: `below`/`clearAbove` only apply to metric triggers"));
    }
    if t.kind == TriggerKind::Startup && t.for_.is_some() {
        p.push(format!("{at}: startup has no `for`: it fires once, when the sidecar first sees a runtime"));
    }
    if t.kind == TriggerKind::Crash && !t.processes.is_empty() {
        p.push(format!(
            "{at}: a crash trigger has no `processes`: the runtime writes its crash dump itself, before the sidecar \
             could tell which process it was"
        ));
    }
    if t.processes.iter().any(|g| g.is_empty()) {
        p.push(format!("{at}: processes entries must not be empty (write \"*\" to match any)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DumpPolicySpec;

    #[test]
    fn metric_triggers_parse_in_both_forms() {
        let p = DumpPolicySpec::from_yaml(
            "triggers:\n\
             - {type: metric, metric: {provider: MyApp.Queue, counter: queue-length}, above: 40, for: 5s}\n\
             - {type: metric, metric: {meter: MyApp, instrument: request-duration, percentile: 99}, above: 250}\n\
             - {type: metric, metric: {meter: MyApp, instrument: queue-length}, below: 5, clearAbove: 10}\n\
             - {type: threadPoolQueue, below: 1, processes: [\"Orders.*\"]}\n\
             - {type: startup, capture: [stacks], processes: [\"*--role=worker*\"]}\n",
        )
        .unwrap();
        let r: Vec<_> = p.triggers.iter().filter_map(|t| t.metric.as_ref()?.reference()).collect();
        assert_eq!(r[0], MetricRef::EventCounter { provider: "MyApp.Queue", counter: "queue-length" });
        assert_eq!(r[1], MetricRef::Instrument { meter: "MyApp", instrument: "request-duration", percentile: 99 });
        assert_eq!(r[2], MetricRef::Instrument { meter: "MyApp", instrument: "queue-length", percentile: 95 });
        assert_eq!(p.triggers[3].processes, ["Orders.*"]);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<DumpPolicySpec>(&json).unwrap(), p);
    }

    #[test]
    fn metric_mistakes_are_told_in_words() {
        let err = DumpPolicySpec::from_yaml(
            "triggers:\n\
             - {type: metric, above: 1}\n\
             - {type: metric, metric: {provider: P, instrument: i}, above: 1}\n\
             - {type: metric, metric: {meter: M, instrument: i, percentile: 90}, above: 1, below: 0}\n\
             - {type: cpu, below: 10%, clearBelow: 20%}\n\
             - {type: deadlock, metric: {meter: M, instrument: i}, below: 3}\n\
             - {type: startup, for: 1s}\n\
             - {type: crash, processes: [x]}\n\
             - {type: metric, metric: {meter: M, instrument: i}}\n\
             - {type: metric, metric: {meter: M, instrument: \"a,b\"}, above: 1}\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "triggers[0] (metric): a metric trigger needs `metric`: either provider + counter",
            "triggers[1] (metric): metric needs either provider + counter (an EventCounter) or meter + instrument",
            "triggers[2] (metric): metric.percentile must be 50, 95 or 99",
            "triggers[2] (metric): give one of `above` or `below`, not both",
            "triggers[3] (cpu): clearBelow re-arms an `above` trigger",
            "triggers[4] (deadlock): `metric` only applies to metric triggers",
            "triggers[4] (deadlock): `below`/`clearAbove` only apply to metric triggers",
            "triggers[5] (startup): startup has no `for`",
            "triggers[6] (crash): a crash trigger has no `processes`",
            "triggers[7] (metric): `above` or `below` (the threshold) is required",
            "triggers[8] (metric): a meter or instrument name with ; , = \" \\ or a line break cannot be requested",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }
}
