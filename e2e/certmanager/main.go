// Command certmanager runs cert-manager's certificate controllers or its CA injector against a
// Kubernetes API server, for dumpwatch's end-to-end tests of the chart's certificates.mode=cert-manager.
//
// cert-manager's own binaries (cmd/controller, cmd/cainjector) are Go modules of their own that the
// module proxy does not serve, so this program wires the same library packages of
// github.com/cert-manager/cert-manager (the version in go.mod) into a process: the controllers are
// cert-manager's, unchanged; only the start-up is ours. It runs the controllers the chart's objects
// need (self-signed and CA issuers, Certificates, CertificateRequests and their approval) and none
// of ACME, Vault, Venafi or the ingress/gateway shims. No leader election, no metrics server.
//
//	certmanager controller --kubeconfig FILE [--cluster-resource-namespace NS]
//	certmanager cainjector --kubeconfig FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server (required)")
	clusterResourceNamespace := fs.String("cluster-resource-namespace", "cert-manager",
		"controller: where ClusterIssuers' Secrets live")
	workers := fs.Int("workers", 5, "controller: workers per controller")
	verbosity := fs.String("v", "2", "klog verbosity")
	_ = fs.Parse(os.Args[2:])
	if *kubeconfig == "" {
		usage()
	}
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", *verbosity)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var err error
	switch os.Args[1] {
	case "controller":
		err = runController(ctx, *kubeconfig, *clusterResourceNamespace, *workers)
	case "cainjector":
		err = runCAInjector(ctx, *kubeconfig)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "certmanager %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: certmanager controller|cainjector --kubeconfig FILE [--cluster-resource-namespace NS] [--workers N] [--v N]")
	os.Exit(2)
}
