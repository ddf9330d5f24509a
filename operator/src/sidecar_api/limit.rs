//! A request rate limit per calling pod (token bucket): one pod, however compromised, cannot
//! keep the operator busy with TokenReviews already cached, API server reads and S3 calls at the
//! expense of the others. Pure and clocked from outside, so tests need no sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; beyond, full ones (pods that were idle long enough) are dropped.
const MAX_PODS: usize = 10_000;

/// Sustained requests per second and burst, per pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for Rate {
    /// A sidecar makes a few calls per capture and one long poll a minute; an analysis Job one.
    fn default() -> Self {
        Self { per_second: 2.0, burst: 20.0 }
    }
}

pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request of `namespace/pod` at `now`: `Ok`, or how long until one is allowed.
    pub fn take(&self, namespace: &str, pod: &str, now: Instant) -> Result<(), Duration> {
        let Rate { per_second, burst } = self.rate;
        let mut buckets = self.buckets.lock().expect("poisoned");
        if buckets.len() >= MAX_PODS {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let (tokens, at) = buckets.entry((namespace.to_string(), pod.to_string())).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let l = Limiter::new(Rate { per_second: 2.0, burst: 3.0 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("shop", "noisy", t0).is_ok());
        }
        let wait = l.take("shop", "noisy", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(l.take("shop", "quiet", t0).is_ok(), "another pod has its own bucket");
        assert!(l.take("other", "noisy", t0).is_ok(), "a pod of the same name elsewhere too");
        assert!(l.take("shop", "noisy", t0 + Duration::from_millis(500)).is_ok(), "refilled at the rate");
        assert!(l.take("shop", "noisy", t0 + Duration::from_millis(600)).is_err());
        // Idle for long: back to the burst, not more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.take("shop", "noisy", later).is_ok());
        }
        assert!(l.take("shop", "noisy", later).is_err());
    }
}
