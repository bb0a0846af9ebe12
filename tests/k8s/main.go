// Command boss-k8s is a multi-call binary holding a real Kubernetes control plane for
// BOSS's tests: embedded etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet, kube-proxy and kubectl, all from k8s.io/kubernetes as Go modules. Each component runs in its own
// process; the first argument (or the name the binary was invoked as, through a symlink)
// picks it:
//
//	boss-k8s etcd --data-dir DIR --listen-client-url URL --listen-peer-url URL
//	boss-k8s kube-apiserver [flags]
//	boss-k8s kube-controller-manager [flags]
//	boss-k8s kube-scheduler [flags]
//	boss-k8s kubelet [flags]       (a real node, with containerd: tests/node.py)
//	boss-k8s kube-proxy [flags]    (iptables mode: Service IPs route from pods)
//	boss-k8s kubectl [args]        (or a symlink named kubectl)
//	boss-k8s version
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	_ "time/tzdata" // for CronJob time zones, as the upstream mains do

	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/component-base/version"
)

var components = map[string]func() int{
	"etcd":                    runEtcd,
	"kube-apiserver":          runAPIServer,
	"kube-controller-manager": runControllerManager,
	"kube-scheduler":          runScheduler,
	"kubelet":                 runKubelet,
	"kube-proxy":              runProxy,
	"kubectl":                 runKubectl,
	"version": func() int {
		fmt.Println(version.Get().GitVersion)
		return 0
	},
}

func names() string {
	var n []string
	for k := range components {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

func main() {
	// Invoked through a symlink named after a component (e.g. bin/kubectl)?
	base := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	if run, ok := components[base]; ok && base != "version" {
		os.Exit(run())
	}
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s COMPONENT [flags]\ncomponents: %s\n", base, names())
		os.Exit(2)
	}
	run, ok := components[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: unknown component %q; one of: %s\n", base, os.Args[1], names())
		os.Exit(2)
	}
	// Cobra reads os.Args[1:]: drop the component argument so each command sees its own flags,
	// and name the process after the component in its usage and logs.
	os.Args = append([]string{os.Args[1]}, os.Args[2:]...)
	os.Exit(run())
}
