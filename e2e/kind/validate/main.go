// Command validate checks e2e/kind/cluster.yaml with kind's own config types
// (sigs.k8s.io/kind/pkg/apis/config/v1alpha4), decoded the way kind decodes it: YAML with
// unknown fields refused. kind's loader and its validation live in internal packages, so the
// checks kind would make at `kind create cluster` that matter here are repeated below.
//
//	go run . ../cluster.yaml
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate <kind config>...")
		os.Exit(64)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: a valid kind.x-k8s.io/v1alpha4 Cluster\n", path)
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg v1alpha4.Cluster
	d := yaml.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	if err := d.Decode(&cfg); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if cfg.Kind != "Cluster" || cfg.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return fmt.Errorf("kind %q apiVersion %q, want Cluster kind.x-k8s.io/v1alpha4", cfg.Kind, cfg.APIVersion)
	}
	controlPlanes := 0
	for i, n := range cfg.Nodes {
		switch n.Role {
		case v1alpha4.ControlPlaneRole:
			controlPlanes++
		case v1alpha4.WorkerRole:
		default:
			return fmt.Errorf("nodes[%d]: role %q", i, n.Role)
		}
		// The image pinned by tag: a name with ":" after its last "/".
		name := strings.SplitN(n.Image, "@", 2)[0]
		if !strings.Contains(name[strings.LastIndex(name, "/")+1:], ":") {
			return fmt.Errorf("nodes[%d]: image %q has no tag", i, n.Image)
		}
	}
	if controlPlanes < 1 {
		return fmt.Errorf("no control-plane node")
	}
	for what, cidr := range map[string]string{"podSubnet": cfg.Networking.PodSubnet, "serviceSubnet": cfg.Networking.ServiceSubnet} {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return fmt.Errorf("networking.%s %q (run.sh routes it, so it must be set): %w", what, cidr, err)
		}
	}
	return nil
}
