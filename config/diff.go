package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// Diff returns the dotted key names (cluster.hash_seed,
// interfaces[1].cluster_mac, conntrack.timeouts.icmp) whose values differ
// between a and b, in the order of the schema. A list whose length
// differs is named whole (interfaces), as are lists of plain values
// (interfaces[0].cluster_addresses).
func Diff(a, b *Config) []string {
	var out []string
	diff(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	return out
}

func diff(a, b reflect.Value, path string, out *[]string) {
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			diff(a.Field(i), b.Field(i), join(path, name), out)
		}
	case reflect.Slice:
		if a.Len() != b.Len() || a.Type().Elem().Kind() != reflect.Struct {
			if !reflect.DeepEqual(a.Interface(), b.Interface()) {
				*out = append(*out, path)
			}
			return
		}
		for i := 0; i < a.Len(); i++ {
			diff(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}

// RuntimeKeys are the keys a reload applies without a restart.
var RuntimeKeys = []string{"cluster.local_node", "cluster.local_nodemask", "cluster.invert"}

// RestartKeys returns the keys that differ between the running settings
// and new ones and cannot change without a restart: every key of Diff but
// RuntimeKeys. The cluster match may be written as cluster.iptables text
// or as separate keys: its parameters are compared as matches
// (cluster.Match.CanChangeTo), so rewriting the same match another way is
// no change, and a changed parameter is named by its key
// (cluster.hash_seed, also when it is written in cluster.iptables).
func RestartKeys(running, next *Settings) []string {
	var cl, out []string
	var fe *cluster.FixedError
	if errors.As(running.Match.CanChangeTo(next.Match), &fe) {
		for _, opt := range fe.Options {
			cl = append(cl, "cluster."+clusterKeys[opt])
		}
	}
	for _, k := range Diff(&running.file, &next.file) {
		if !strings.HasPrefix(k, "cluster.") {
			out = append(out, k)
		}
	}
	return append(cl, out...)
}
