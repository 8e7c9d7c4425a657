// Command etcd is a thin wrapper that builds the upstream etcd server from its Go module
// (go.etcd.io/etcd/server/v3 carries replace lines, so `go install` of it is refused).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
