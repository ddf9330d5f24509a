// Command etcd is upstream etcd's own main, built at the version Kubernetes selects.
// (The root go.etcd.io/etcd/v3 module has replace directives, so it cannot be built directly.)
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
