package config

import (
	"strings"
	"testing"
)

// TestNewConnections: interfaces[].new_connections defaults to true, false
// reaches the role as node.Interface.NoNewConnections, and what cannot
// work is refused naming the key.
func TestNewConnections(t *testing.T) {
	back := `    cluster_addresses: ["10.2.0.1", "2001:db8:2::1"]`
	front := `    cluster_addresses: ["10.1.0.1", "2001:db8:1::1"]`
	tests := []struct {
		name    string
		edit    func(string) string
		want    []bool // NoNewConnections per interface
		wantErr string
	}{
		{"default", func(s string) string { return s }, []bool{false, false}, ""},
		{"false on the servers' side", func(s string) string {
			return strings.Replace(s, back, back+"\n    new_connections: false", 1)
		}, []bool{false, true}, ""},
		{"true written", func(s string) string {
			return strings.Replace(s, back, back+"\n    new_connections: true", 1)
		}, []bool{false, false}, ""},
		{"false everywhere", func(s string) string {
			s = strings.Replace(s, back, back+"\n    new_connections: false", 1)
			return strings.Replace(s, front, front+"\n    new_connections: false", 1)
		}, nil, "interfaces: new_connections is false on every interface"},
		{"back-end role", func(s string) string {
			return "role: backend\n" + strings.Replace(s, back, back+"\n    new_connections: false", 1)
		}, nil, "interfaces[1].new_connections false: only for role gateway"},
		{"not a boolean", func(s string) string {
			return strings.Replace(s, back, back+"\n    new_connections: maybe", 1)
		}, nil, "maybe"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.edit(example)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.want {
				if got := s.Interfaces[i].NoNewConnections; got != w {
					t.Errorf("interface %d NoNewConnections %v, want %v", i, got, w)
				}
			}
		})
	}
}
