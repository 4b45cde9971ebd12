package node

import "testing"

// TestModeString: the structured modes print as the strings the logs and
// `ctl status` have always shown.
func TestModeString(t *testing.T) {
	for _, tc := range []struct {
		m    Mode
		want string
	}{
		{Mode{Role: RoleGateway, XDP: "native", IO: IOAFXDP, Copy: Copy, Queues: 1}, "xdp native, afxdp copy, 1 queue(s)"},
		{Mode{Role: RoleGateway, XDP: "generic", IO: IOAFXDP, Copy: CopyZero, Queues: 4}, "xdp generic, afxdp zero-copy, 4 queue(s)"},
		{Mode{Role: RoleGateway, XDP: None, IO: IOAFPacket, Copy: Copy, Queues: 1}, "afpacket, 1 queue"},
		{Mode{Role: RoleGateway, XDP: None, IO: IOAFPacket, Copy: Copy, Queues: 2, TC: true}, "afpacket, 2 sockets (IPv4, IPv6), fast path in tc"},
		{Mode{Role: RoleBackend, XDP: "generic", IO: None, Copy: None}, "backend xdp generic"},
		{Mode{Role: RoleBackend, XDP: "native", IO: None, Copy: None}, "backend xdp native"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.m, got, tc.want)
		}
	}
}
