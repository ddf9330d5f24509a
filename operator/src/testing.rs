//! For other crates' integration tests: the operator's sidecar API served exactly as `main`
//! serves it (the same HTTPS listener code), in the background, so that a sidecar or an
//! analysis Job can be tested against the real thing without the whole operator.

use std::path::Path;

use crate::sidecar_api::{SidecarApi, router};
use crate::webhook::certs::CertPem;
use crate::webhook::{CertSource, serve_on};

/// Serves the sidecar API on `https://127.0.0.1:<port>` (returned) with the serving certificate
/// in `cert`/`key` (PEM files), talking to the API server of `kubeconfig`, from a thread and
/// runtime of its own that live as long as the test process. `part_size` overrides the S3
/// multipart part size (tests use small parts to exercise multipart on small files).
pub fn serve_sidecar_api(kubeconfig: &Path, cert: &Path, key: &Path, part_size: Option<u64>) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let serving = CertPem { cert: read(cert), key: read(key) };
    let kubeconfig = kubeconfig.to_path_buf();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let port = listener.local_addr().expect("bound address").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("kube config");
            let client = kube::Client::try_from(config).expect("kube client");
            let mut api = SidecarApi::new(client, "dumpwatch");
            if let Some(bytes) = part_size {
                api = api.with_part_size(bytes);
            }
            let certs = CertSource::empty();
            // The CA is not served (only the chain in `cert`); clients get it from the test.
            certs.set(&serving, "").expect("serving certificate");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            serve_on(listener, certs, router(api)).await.expect("serving the sidecar API");
        });
    });
    format!("https://127.0.0.1:{port}")
}
