// Command nodeagent is dumpwatch's test stand-in for a kubelet. It registers a Node, binds
// unscheduled pods to itself (there is no kube-scheduler in the test control plane), and runs
// each container's command as a local process: the image name is mapped to a local binary
// through a JSON map, env and args come from the spec, volumes are directories on the host, and
// every container gets its own mount namespace and either its own PID namespace or, with
// shareProcessNamespace, the pod's shared one. It reports pod status and exit codes back
// through the API and finalizes pod deletion. See README.md for the limits (no images, no
// network beyond loopback, no logs/exec API).
//
// It stays only for tests that start many clusters at once with the workspace's binaries or
// stand-in scripts as "images" (harness controlplane/dotnet_pod, operator controller_*, the
// chart's cert-manager test): the real node (e2e/node) is one per machine and needs packed
// images. The scenarios run on the real node. README.md lists why.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

type agent struct {
	client    kubernetes.Interface
	node      string
	stateDir  string
	images    map[string]string
	lister    cache.Indexer
	mu        sync.Mutex
	workers   map[types.UID]*podWorker
	startedAt time.Time
	apiHost   string // host and port of the apiserver, for pods' in-cluster configuration
	apiPort   string
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	node := flag.String("node-name", "dumpwatch-node", "name of the Node to register")
	imageMap := flag.String("image-map", "", `JSON file {"image": "/path/to/entrypoint", ...}; images not listed need an explicit command`)
	stateDir := flag.String("state-dir", "", "directory for pod volumes and container logs")
	flag.Parse()
	if *kubeconfig == "" || *stateDir == "" {
		log.Fatal("nodeagent: --kubeconfig and --state-dir are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("nodeagent: kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client := kubernetes.NewForConfigOrDie(cfg)
	images := map[string]string{}
	if *imageMap != "" {
		data, err := os.ReadFile(*imageMap)
		if err != nil {
			log.Fatalf("nodeagent: image map: %v", err)
		}
		if err := json.Unmarshal(data, &images); err != nil {
			log.Fatalf("nodeagent: image map %s: %v", *imageMap, err)
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	a := &agent{client: client, node: *node, stateDir: *stateDir, images: images,
		workers: map[types.UID]*podWorker{}, startedAt: time.Now()}
	if u, err := url.Parse(cfg.Host); err == nil {
		a.apiHost, a.apiPort = u.Hostname(), u.Port()
	}
	if err := a.registerNode(ctx); err != nil {
		log.Fatalf("nodeagent: register node: %v", err)
	}
	go a.heartbeat(ctx)

	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Pods().Informer()
	a.lister = inf.GetIndexer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onPod(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.onPod(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.onGone(p.UID)
			}
		},
	})
	factory.Start(ctx.Done())
	log.Printf("nodeagent: node %s ready", a.node)
	<-ctx.Done()
	a.mu.Lock()
	ws := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.killAll(2 * time.Second)
	}
}

func (a *agent) registerNode(ctx context.Context) error {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: a.node, Labels: map[string]string{
			"kubernetes.io/hostname": a.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"dumpwatch.io/test-node": "true",
		}},
	}
	_, err := a.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return a.updateNodeStatus(ctx)
}

func (a *agent) updateNodeStatus(ctx context.Context) error {
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("16"),
		corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	status := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message:           "dumpwatch test node agent is posting ready status",
			LastHeartbeatTime: now, LastTransitionTime: metav1.NewTime(a.startedAt),
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: a.node}},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64",
			KubeletVersion: "dumpwatch-nodeagent", ContainerRuntimeVersion: "dumpwatch://processes"},
	}
	data, _ := json.Marshal(map[string]any{"status": status})
	_, err := a.client.CoreV1().Nodes().Patch(ctx, a.node, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
	return err
}

func (a *agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				log.Printf("nodeagent: heartbeat: %v", err)
			}
		}
	}
}

func (a *agent) onPod(ctx context.Context, p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		if p.DeletionTimestamp == nil && (p.Spec.SchedulerName == "" || p.Spec.SchedulerName == corev1.DefaultSchedulerName) {
			go a.bind(ctx, p)
		}
		return
	}
	if p.Spec.NodeName != a.node {
		return
	}
	a.mu.Lock()
	w, ok := a.workers[p.UID]
	if !ok {
		w = newPodWorker(a, p)
		a.workers[p.UID] = w
		go w.run(ctx)
	}
	a.mu.Unlock()
	w.notify()
}

func (a *agent) onGone(uid types.UID) {
	a.mu.Lock()
	w, ok := a.workers[uid]
	delete(a.workers, uid)
	a.mu.Unlock()
	if ok {
		w.gone()
	}
}

func (a *agent) bind(ctx context.Context, p *corev1.Pod) {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: a.node},
	}
	err := a.client.CoreV1().Pods(p.Namespace).Bind(ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		log.Printf("nodeagent: bind %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// latest returns the informer's newest copy of the pod, or nil once it is gone.
func (a *agent) latest(ns, name string, uid types.UID) *corev1.Pod {
	obj, ok, err := a.lister.GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	p := obj.(*corev1.Pod)
	if p.UID != uid {
		return nil
	}
	return p
}

func (a *agent) podDir(p *corev1.Pod) string {
	return filepath.Join(a.stateDir, "pods", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID))
}
