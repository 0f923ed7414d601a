// A container runtime's CNI calls, made with libcni (the library containerd and CRI-O use),
// for cni/tests/libcni.rs. Builds offline against Debian's golang-github-appc-cni-dev:
//   GOPATH=/usr/share/gocode GO111MODULE=off go build -o DRIVER .
//
// Usage: DRIVER add|check|del CONFLIST CONTAINERID NETNS IFNAME CNI_ARGS CNI_PATH CACHEDIR [CAPABILITY_ARGS]
// CNI_ARGS is K=V;K=V. CAPABILITY_ARGS is a JSON object, the runtime's capability arguments
// (e.g. {"ips":["10.0.0.5/24"],"bandwidth":{...},"portMappings":[...]}): libcni gives each
// plugin the ones its "capabilities" declare, as runtimeConfig. add prints the result as JSON;
// errors go to stderr, exit status 1.
package main

import (
	"context"
	"encoding/json"
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
	if len(a) != 8 && len(a) != 9 {
		fail(fmt.Errorf("usage: add|check|del CONFLIST CONTAINERID NETNS IFNAME CNI_ARGS CNI_PATH CACHEDIR [CAPABILITY_ARGS]"))
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
	if len(a) == 9 && a[8] != "" {
		if err := json.Unmarshal([]byte(a[8]), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("CAPABILITY_ARGS %q: %v", a[8], err))
		}
	}
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
