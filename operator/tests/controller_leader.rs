//! Leader election on the real kube-apiserver: of two electors exactly one leads; when it dies
//! without releasing, the other takes over once the Lease expires; a leader that shuts down
//! releases the Lease.

mod controller_support;

use std::time::{Duration, Instant};

use controller_support::{client, eventually, start, stop};
use harness::Options;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use operator::controller::LeaderElector;
use tokio::sync::watch;

const LEASE: &str = "dumpwatch-operator-leader";
const DURATION: Duration = Duration::from_secs(3);

struct Replica {
    leading: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(api: &Api<Lease>, identity: &str) -> Replica {
    let elector = LeaderElector {
        api: api.clone(),
        lease_name: LEASE.into(),
        identity: identity.into(),
        lease_duration: DURATION,
    };
    let (leading_tx, leading) = watch::channel(false);
    let (shutdown, mut down) = watch::channel(false);
    let task = tokio::spawn(elector.run(leading_tx, async move {
        let _ = down.wait_for(|s| *s).await;
    }));
    Replica { leading, shutdown, task }
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get(LEASE).await.unwrap().spec.and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_and_takeover() {
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    let client = client(&cp).await;
    let api: Api<Lease> = Api::namespaced(client, "default");

    let mut replicas = vec![("replica-a", replica(&api, "replica-a")), ("replica-b", replica(&api, "replica-b"))];
    let leader = eventually("one leader", Duration::from_secs(30), || {
        let leading: Vec<bool> = replicas.iter().map(|(_, r)| *r.leading.borrow()).collect();
        async move {
            match leading[..] {
                [true, false] => Ok(0),
                [false, true] => Ok(1),
                _ => Err(format!("leading (a, b) = {leading:?}")),
            }
        }
    })
    .await;
    let (first_name, first) = replicas.remove(leader);
    let (second_name, second) = replicas.remove(0);
    assert_eq!(holder(&api).await.as_deref(), Some(first_name));

    // Several renewals later the leadership has not moved, and never both.
    let until = Instant::now() + DURATION * 2;
    while Instant::now() < until {
        assert!(*first.leading.borrow() && !*second.leading.borrow(), "leadership moved or doubled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leader dies without releasing: the follower waits for the Lease to expire, then leads.
    first.task.abort();
    let died = Instant::now();
    eventually("the follower takes over", Duration::from_secs(30), || {
        let l = *second.leading.borrow();
        async move { if l { Ok(()) } else { Err("still following".into()) } }
    })
    .await;
    let took = died.elapsed();
    eprintln!("takeover after the leader died: {took:?} (lease {DURATION:?})");
    assert!(took >= DURATION / 2, "took over before the lease could have expired ({took:?})");
    let lease = api.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some(second_name));
    assert_eq!(lease.lease_transitions, Some(1));

    // A leader that shuts down gives the Lease up at once.
    second.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), second.task).await.expect("the elector stops").unwrap();
    assert_eq!(holder(&api).await, None, "released");
    stop(cp).await;
}
