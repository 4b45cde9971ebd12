package membership

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestStartErrors(t *testing.T) {
	good := Config{Name: "n1", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Secret: make([]byte, 16), Meta: Meta{Total: 12, Home: 0xf}}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "membership name: empty"},
		{"short secret", func(c *Config) { c.Secret = make([]byte, 15) }, "membership secret: 15 bytes: want 16, 24 or 32"},
		{"no secret", func(c *Config) { c.Secret = nil }, "membership secret: 0 bytes"},
		{"no bind", func(c *Config) { c.Bind = netip.AddrPort{} }, "membership bind"},
		{"total 0", func(c *Config) { c.Meta.Total = 0 }, "membership meta total 0: want 1 to 32"},
		{"total 33", func(c *Config) { c.Meta.Total = 33 }, "membership meta total 33"},
		{"home beyond total", func(c *Config) { c.Meta.Home = 1 << 12 }, "membership meta home 0x1000: buckets at or above total 12"},
		{"probe timeout", func(c *Config) { c.Timing.ProbeTimeout = time.Second }, "membership timing ProbeTimeout 1s: must be below ProbeInterval 200ms"},
		{"negative", func(c *Config) { c.Timing.JoinInterval = -time.Second }, "membership timing JoinInterval -1s: must not be negative"},
		// 192.0.2.1 (TEST-NET-1) is no local address: binding fails
		// before anything is sent.
		{"bind failure", func(c *Config) { c.Bind = netip.MustParseAddrPort("192.0.2.1:7946") }, "membership: start memberlist on 192.0.2.1:7946"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			c.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
			n, err := Start(c)
			if err == nil {
				n.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %q, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &logWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=1.2.3.4:5\n",
		"[INFO] memberlist: Suspect n2 has failed, no acks received\n",
		"[WARN] memberlist: Refuting a suspect message (from: n1)\n",
		"[ERR] memberlist: Failed fallback TCP ping\n",
		"no prefix\n",
	} {
		w.Write([]byte(line))
	}
	for _, want := range []string{
		`level=DEBUG msg="memberlist: Stream connection from=1.2.3.4:5"`,
		`level=INFO msg="memberlist: Suspect n2 has failed, no acks received"`,
		`level=WARN msg="memberlist: Refuting a suspect message (from: n1)"`,
		`level=ERROR msg="memberlist: Failed fallback TCP ping"`,
		`level=INFO msg="no prefix"`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("missing %s in:\n%s", want, buf.String())
		}
	}
}
