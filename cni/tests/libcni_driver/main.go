// A container runtime's CNI calls, made with libcni (the library containerd and CRI-O use),
// for cni/tests/libcni.rs. Builds offline against Debian's golang-github-appc-cni-dev:
//   GOPATH=/usr/share/gocode GO111MODULE=off go build -o DRIVER .
//
// Usage: DRIVER add|check|del CONFLIST CONTAINERID NETNS IFNAME CNI_ARGS CNI_PATH CACHEDIR
// CNI_ARGS is K=V;K=V. add prints the result as JSON; errors go to stderr, exit status 1.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	a := os.Args[1:]
	if len(a) != 8 {
		fail(fmt.Errorf("usage: add|check|del CONFLIST CONTAINERID NETNS IFNAME CNI_ARGS CNI_PATH CACHEDIR"))
	}
	list, err := libcni.ConfListFromFile(a[1])
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(a[6], ":"), a[7], nil)
	var args [][2]string
	for _, kv := range strings.Split(a[5], ";") {
		if p := strings.SplitN(kv, "=", 2); len(p) == 2 {
			args = append(args, [2]string{p[0], p[1]})
		}
	}
	rt := &libcni.RuntimeConf{ContainerID: a[2], NetNS: a[3], IfName: a[4], Args: args}
	ctx := context.Background()
	switch a[0] {
	case "add":
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := r.Print(); err != nil {
			fail(err)
		}
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	default:
		err = fmt.Errorf("unknown command %q", a[0])
	}
	if err != nil {
		fail(err)
	}
}
