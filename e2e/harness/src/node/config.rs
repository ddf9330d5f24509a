//! The real node's configuration files, as pure functions of where things are: containerd's
//! TOML, the CNI network, the kubelet's and kube-proxy's configuration objects, and CoreDNS's
//! manifest. Every choice that this machine forced (cgroup v1, no `CAP_SYS_RESOURCE`, no
//! registry, loopback only) is explained where it is made.

use std::path::Path;

use serde_json::{Value, json};

/// The node's bridge: pods get addresses of [`POD_CIDR`] on it; the host is [`NODE_IP`].
pub const BRIDGE: &str = "dwnode0";
pub const POD_CIDR: &str = "10.88.0.0/24";
/// The bridge's own address: the node's InternalIP, where the API server listens for pods.
pub const NODE_IP: &str = "10.88.0.1";
/// The API server's `--service-cluster-ip-range` (routed onto the bridge, never off the host).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// CoreDNS's Service (`kube-dns`), the pods' nameserver.
pub const DNS_IP: &str = "10.0.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The Node's name. The API server reaches the kubelet (logs, exec, port-forward) by the node's
/// Hostname address (`--kubelet-preferred-address-types=Hostname`): `localhost` resolves to
/// 127.0.0.1, where the kubelet listens, while the kubelet refuses a loopback node IP.
pub const NODE_NAME: &str = "localhost";
/// The cgroup (in every v1 hierarchy) under which the kubelet puts every pod.
pub const CGROUP_ROOT: &str = "/dumpwatch-node";
/// The CNI network's name (also the prefix of the CNI result cache files under /var/lib/cni).
pub const NETWORK: &str = "dumpwatch-node";

/// Where the node's files live (all under one per-run directory, except what the components
/// hard-code; see `host.rs`).
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: std::path::PathBuf,
}

impl Layout {
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.join(rel)
    }
    pub fn containerd_socket(&self) -> std::path::PathBuf {
        self.path("containerd/containerd.sock")
    }
}

/// containerd 2.x (config version 3): its own root, state, socket and runc root under the
/// node's directory; CRI with our CNI directories and pinned sandbox image.
pub fn containerd_toml(layout: &Layout, bin: &Path, cni_bin: &Path, sandbox_image: &str) -> String {
    let p = |rel: &str| layout.path(rel).display().to_string();
    format!(
        r#"version = 3
root = '{root}'
state = '{state}'
# NRI listens on a fixed socket under /var/run: not needed, not started.
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '{sock}'

[ttrpc]
  address = '{sock}.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{opt}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  # No registry: every image is imported (ctr images import); the sandbox image is pinned so
  # the kubelet's image GC never removes it and nothing ever tries to pull it.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{sandbox_image}'

[plugins.'io.containerd.cri.v1.runtime']
  # This VM's root lacks CAP_SYS_RESOURCE: lowering oom_score_adj below the runtime's own
  # fails ("failed to update /proc/self/oom_score_adj") unless restricted to it.
  restrict_oom_score_adj = true
  # Network namespaces are bind-mounted under the state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  # The kubelet asks for fsGroup/runAsUser; devices are irrelevant here.
  device_ownership_from_security_context = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{runc}'
        Root = '{runc_root}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni_bin}']
    conf_dir = '{cni_conf}'
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"#,
        root = p("containerd/root"),
        state = p("containerd/state"),
        sock = p("containerd/containerd.sock"),
        opt = p("containerd/opt"),
        runc = bin.join("runc").display(),
        runc_root = p("containerd/runc"),
        cni_bin = cni_bin.display(),
        cni_conf = p("cni/net.d"),
    )
}

/// The pods' network: a bridge on [`POD_CIDR`] with the host as gateway, no masquerading (pod
/// traffic never leaves the host; `host.rs` also drops any forwarded packet that would), hairpin
/// so a pod reaches itself through its Service, IPAM state in the node's directory.
pub fn cni_conflist(layout: &Layout) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "dataDir": layout.path("cni/ipam"),
                },
            },
            {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}},
        ],
    })
}

/// Ports the kubelet serves on 127.0.0.1 (the API server reaches it at `localhost:<port>`).
#[derive(Debug, Clone, Copy)]
pub struct KubeletPorts {
    pub server: u16,
    pub healthz: u16,
}

/// The kubelet's configuration: cgroupfs on this cgroup-v1 host under our own [`CGROUP_ROOT`],
/// webhook authentication and authorization (the API server's client certificate is in
/// `system:masters`), cluster DNS, pod logs in the node's directory, eviction only in real
/// distress (other engineers' builds fill the shared disk and memory).
pub fn kubelet_config(layout: &Layout, ports: KubeletPorts, ca: &Path, serving: (&Path, &Path)) -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": ports.server,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "tlsCertFile": serving.0,
        "tlsPrivateKeyFile": serving.1,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": ca},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": format!("unix://{}", layout.containerd_socket().display()),
        // The host has cgroup v1 only; kubelet 1.36 refuses it unless told not to.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "cgroupsPerQOS": true,
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        // Pods never see the host's nameservers: names outside the cluster do not resolve.
        "resolvConf": "",
        "podLogsDir": layout.path("pod-logs"),
        "failSwapOn": false,
        "registerNode": true,
        "maxPods": 60,
        "serializeImagePulls": false,
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "2%",
            "nodefs.inodesFree": "2%",
            "imagefs.available": "2%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
    })
}

/// kube-proxy in nftables mode (the host has `nft`, no iptables), Services of the pod CIDR's
/// pods; conntrack limits and timeouts left as the host has them (0 = do not touch the sysctl).
pub fn kube_proxy_config(kubeconfig: &Path, healthz: u16, metrics: u16) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "mode": "nftables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": format!("127.0.0.1:{healthz}"),
        "metricsBindAddress": format!("127.0.0.1:{metrics}"),
        "nodePortAddresses": [format!("{NODE_IP}/32")],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    })
}

/// CoreDNS for the cluster domain only: no `forward`, so a pod asking for any other name gets
/// an error instead of the host's resolver (no address off this machine is ever asked).
pub fn coredns_manifest(image: &str) -> String {
    let corefile = format!(
        ".:53 {{\n    errors\n    health :8080\n    ready :8181\n    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n        pods insecure\n    }}\n    cache 5\n}}\n"
    );
    let objects = json!([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
           "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
             "spec": {"serviceAccountName": "coredns", "dnsPolicy": "Default", "priorityClassName": "system-cluster-critical",
               "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
               "containers": [{"name": "coredns", "image": image, "imagePullPolicy": "Never",
                 "args": ["-conf", "/etc/coredns/Corefile"],
                 "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                           {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                 "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                     "capabilities": {"drop": ["ALL"]}},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}]}],
               "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
         "spec": {"clusterIP": DNS_IP, "selector": {"k8s-app": "kube-dns"},
           "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]);
    json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_address_is_the_bridge_gateway_inside_the_pod_cidr_and_dns_inside_the_service_range() {
        let inside = |ip: &str, cidr: &str| {
            let (net, bits) = cidr.split_once('/').unwrap();
            let n = |s: &str| s.split('.').fold(0u32, |a, o| a << 8 | o.parse::<u32>().unwrap());
            let mask = u32::MAX << (32 - bits.parse::<u32>().unwrap());
            n(ip) & mask == n(net) & mask
        };
        assert!(inside(NODE_IP, POD_CIDR));
        assert!(inside(DNS_IP, SERVICE_CIDR));
        assert!(!inside(NODE_IP, SERVICE_CIDR) && !inside(DNS_IP, POD_CIDR));
    }

    #[test]
    fn containerd_pins_the_sandbox_and_keeps_its_state_in_the_node_dir() {
        let layout = Layout { dir: "/tmp/n".into() };
        let toml = containerd_toml(&layout, Path::new("/b"), Path::new("/c"), "localhost/p:1");
        assert!(toml.contains("sandbox = 'localhost/p:1'"));
        assert!(toml.contains("restrict_oom_score_adj = true"));
        assert!(toml.contains("BinaryName = '/b/runc'"));
        for line in toml.lines().filter(|l| l.contains("= '/")) {
            assert!(line.contains("'/tmp/n/") || line.contains("'/b/") || line.contains("'/c'"), "{line}");
        }
    }
}
