//! Starts the test control plane (etcd, kube-apiserver, kube-controller-manager, node agent) and
//! keeps it up until Enter or end of input, printing the kubeconfig to use:
//!
//! ```sh
//! cargo run -p harness --example cluster            # interactive
//! cargo run -p harness --example cluster </dev/null # start, time, stop (a startup benchmark)
//! ```

use std::time::Instant;

fn main() -> harness::Result<()> {
    let opts = harness::Options { images: vec![("e2e/shell".into(), "/bin/sh".into())], ..Default::default() };
    let cp = harness::ControlPlane::start_with(opts)?;
    println!("ready in {:.2?} ({:.2?})", cp.started_in(), cp.phases());
    println!("export KUBECONFIG={}", cp.kubeconfig().display());
    println!("kubectl: {}", harness::kubectl_path().display());
    println!("logs and node state: {}", cp.dir().display());
    println!("image e2e/shell runs /bin/sh. Press Enter to stop.");
    let _ = std::io::stdin().read_line(&mut String::new());
    let t = Instant::now();
    drop(cp);
    println!("stopped in {:.2?}", t.elapsed());
    Ok(())
}
