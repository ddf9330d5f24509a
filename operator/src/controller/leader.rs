//! Leader election on a `coordination.k8s.io/v1` Lease, so that of two operator replicas only
//! one runs the controllers (both serve HTTPS). The decision is pure ([`lease_decision`]); the
//! elector writes the Lease with its `resourceVersion`, so of two replicas racing for an expired
//! Lease the API server lets exactly one win (the other gets 409 Conflict).
//!
//! A leader that cannot renew steps down at its renew deadline (two thirds of the lease), timed
//! from the moment its last successful renewal *started* (the `renewTime` it wrote is no earlier),
//! and a renewal that hangs is cut off there: so it has stopped leading before the Lease can
//! expire for the other replica, and two leaders never overlap (within the clock skew any Lease
//! assumes).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds the Lease (none exists, released, or expired): take it.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it until `expires`.
    Follow { holder: String, expires: Timestamp },
}

/// What `me` should do about `lease` at `now`. Expiry is `renewTime + leaseDurationSeconds`
/// (the replicas' clocks are assumed within a few seconds of each other, as for any Lease).
pub fn lease_decision(lease: Option<&Lease>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else { return LeaseDecision::Acquire };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    if holder == me {
        return LeaseDecision::Renew;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    match renewed {
        Some(r) if r + duration > now => LeaseDecision::Follow { holder, expires: r + duration },
        _ => LeaseDecision::Acquire,
    }
}

/// The Lease spec after `me` acquires or renews `old` at `now`.
pub fn held_lease(old: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> LeaseSpec {
    let ours = old.and_then(|o| o.holder_identity.as_deref()) == Some(me);
    let transitions = old.and_then(|o| o.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        acquire_time: if ours { old.and_then(|o| o.acquire_time.clone()) } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || old.is_none() { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    pub api: Api<Lease>,
    pub lease_name: String,
    pub identity: String,
    /// How long a Lease lasts without renewal (the takeover time when a leader dies).
    pub lease_duration: Duration,
}

/// When to try again, and the deadline by which a leader must have renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub retry_period: Duration,
    pub renew_deadline: Duration,
}

impl Timing {
    /// Renew every third of the lease; give up leading at two thirds, a third before it expires.
    pub fn for_lease(lease_duration: Duration) -> Self {
        Self {
            retry_period: (lease_duration / 3).max(Duration::from_millis(200)),
            renew_deadline: (lease_duration * 2 / 3).max(Duration::from_millis(400)),
        }
    }
}

impl LeaderElector {
    /// One round: read, decide, write. Returns whether this replica leads now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.lease_name).await?;
        match lease_decision(current.as_ref(), &self.identity, now) {
            LeaseDecision::Follow { .. } => Ok(false),
            LeaseDecision::Acquire | LeaseDecision::Renew => {
                let spec = held_lease(
                    current.as_ref().and_then(|l| l.spec.as_ref()),
                    &self.identity,
                    now,
                    self.lease_duration,
                );
                let result = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta { name: Some(self.lease_name.clone()), ..Default::default() },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        // Carries the resourceVersion read above: a concurrent write makes this a 409.
                        lease.spec = Some(spec);
                        self.api.replace(&self.lease_name, &PostParams::default(), &lease).await
                    }
                };
                match result {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Campaigns until `shutdown` resolves, publishing leadership on `leading` (see [`campaign`]).
    /// On shutdown a leader releases the Lease, so the other replica takes over at once.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        let timing = Timing::for_lease(self.lease_duration);
        let lease = self.lease_name.clone();
        campaign(|| self.try_acquire_or_renew(), timing, &leading, shutdown, &lease).await;
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "leader election: lease not released; the other replica waits for it to expire");
            }
        }
    }

    /// Gives the Lease up (empty holder), if it is still ours.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api.replace(&self.lease_name, &PostParams::default(), &lease).await?;
        Ok(())
    }
}

/// The election loop around `attempt` (one read-decide-write round: `Ok(true)` when this replica
/// holds the Lease): try every `retry_period`; lead from a successful round until `renew_deadline`
/// after the *start* of the last successful round, stepping down on time even while a round hangs
/// (the round is then dropped). Returns when `shutdown` resolves.
pub async fn campaign<F, Fut>(
    mut attempt: F,
    timing: Timing,
    leading: &watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
    lease: &str,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    // Start of the last round that renewed: the Lease's renewTime is no earlier.
    let mut renewed_at: Option<tokio::time::Instant> = None;
    loop {
        let started = tokio::time::Instant::now();
        let deadline = renewed_at.map(|t| t + timing.renew_deadline);
        // A leader's round may not outlast its deadline; a follower's not its retry period.
        let cut_off = deadline.unwrap_or(started + timing.retry_period.max(timing.renew_deadline));
        let round = tokio::select! {
            r = tokio::time::timeout_at(cut_off, attempt()) => r.ok(),
            _ = &mut shutdown => return,
        };
        match round {
            Some(Ok(true)) => {
                renewed_at = Some(started);
                leading.send_if_modified(|l| !std::mem::replace(l, true));
            }
            Some(Ok(false)) => {
                renewed_at = None;
                leading.send_if_modified(|l| std::mem::replace(l, false));
            }
            Some(Err(e)) => tracing::warn!(error = %e, lease, "leader election: lease not read or written"),
            None => tracing::warn!(lease, "leader election: the API server did not answer in time"),
        }
        if renewed_at.is_some_and(|t| t.elapsed() >= timing.renew_deadline) {
            tracing::warn!(lease, "leader election: not renewed within the renew deadline; stepping down");
            renewed_at = None;
            leading.send_if_modified(|l| std::mem::replace(l, false));
        }
        let next = started + timing.retry_period;
        let step_down = renewed_at.map(|t| t + timing.renew_deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut shutdown => return,
        }
        if step_down.is_some_and(|d| tokio::time::Instant::now() >= d) {
            renewed_at = None;
            leading.send_if_modified(|l| std::mem::replace(l, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::ts;

    fn lease(holder: Option<&str>, renewed: i64, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(secs),
                renew_time: Some(MicroTime(ts(renewed))),
                acquire_time: Some(MicroTime(ts(0))),
                lease_transitions: Some(2),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn nobody_holds_it_so_take_it() {
        assert_eq!(lease_decision(None, "a", ts(0)), LeaseDecision::Acquire);
        assert_eq!(lease_decision(Some(&lease(None, 0, 15)), "a", ts(1)), LeaseDecision::Acquire);
        assert_eq!(lease_decision(Some(&lease(Some(""), 0, 15)), "a", ts(1)), LeaseDecision::Acquire);
    }

    #[test]
    fn a_live_lease_of_another_is_followed_until_it_expires() {
        let l = lease(Some("b"), 100, 15);
        assert_eq!(
            lease_decision(Some(&l), "a", ts(110)),
            LeaseDecision::Follow { holder: "b".into(), expires: ts(115) }
        );
        assert_eq!(lease_decision(Some(&l), "a", ts(115)), LeaseDecision::Acquire);
        assert_eq!(lease_decision(Some(&l), "b", ts(200)), LeaseDecision::Renew, "its own lease is renewed even late");
    }

    #[test]
    fn acquiring_counts_a_transition_renewing_does_not() {
        let old = lease(Some("b"), 100, 15).spec.unwrap();
        let taken = held_lease(Some(&old), "a", ts(200), Duration::from_secs(15));
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!((taken.lease_transitions, taken.acquire_time.clone()), (Some(3), Some(MicroTime(ts(200)))));
        let renewed = held_lease(Some(&taken), "a", ts(205), Duration::from_secs(15));
        assert_eq!((renewed.lease_transitions, renewed.acquire_time), (Some(3), Some(MicroTime(ts(200)))));
        assert_eq!(renewed.renew_time, Some(MicroTime(ts(205))));
        assert_eq!(held_lease(None, "a", ts(1), Duration::from_secs(15)).lease_transitions, Some(0));
    }

    #[test]
    fn the_renew_deadline_falls_a_third_before_the_lease_ends() {
        let timing = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(timing, Timing { retry_period: Duration::from_secs(5), renew_deadline: Duration::from_secs(10) });
    }

    /// A leader whose renewals stop answering (an API server partition) steps down at its renew
    /// deadline, timed from its last renewal's start, while its Lease still keeps the other
    /// replica out: the two never lead at once. (Real time, a 900 ms Lease: 600 ms deadline.)
    #[tokio::test]
    async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
        let lease = Duration::from_millis(900);
        let timing = Timing::for_lease(lease);
        let (leading, mut seen) = watch::channel(false);
        let rounds = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let attempt = || {
            let first = rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if !first {
                    std::future::pending::<()>().await; // every renewal hangs
                }
                Ok::<_, Error>(true) // acquired at once
            }
        };
        let watching = async {
            seen.wait_for(|l| *l).await.unwrap();
            let became = start.elapsed();
            seen.wait_for(|l| !*l).await.unwrap();
            (became, start.elapsed())
        };
        let (became, stepped_down) = tokio::select! {
            _ = campaign(attempt, timing, &leading, std::future::pending::<()>(), "test") => unreachable!(),
            times = watching => times,
        };
        assert!(became < Duration::from_millis(100), "{became:?}");
        assert!(stepped_down >= timing.renew_deadline, "{stepped_down:?}: it had renewed until then");
        assert!(stepped_down < lease, "stepped down at {stepped_down:?}, after its Lease could expire");
    }

    #[tokio::test]
    async fn a_leader_that_renews_keeps_leading() {
        let (leading, seen) = watch::channel(false);
        let timing = Timing::for_lease(Duration::from_millis(600));
        let shutdown = tokio::time::sleep(Duration::from_secs(2));
        campaign(|| async { Ok::<_, Error>(true) }, timing, &leading, shutdown, "test").await;
        assert!(*seen.borrow(), "renewed every 200 ms for 2 s: still the leader");
    }
}
