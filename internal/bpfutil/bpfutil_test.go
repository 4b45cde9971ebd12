package bpfutil_test

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xdpcluster/xdpcluster/internal/bpfutil"
	"github.com/xdpcluster/xdpcluster/internal/netns/nstest"
)

// TestParseAttachMode: the configuration names parse to their mode and
// back; anything else is an error naming the value and what is allowed,
// never a silent native.
func TestParseAttachMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bpfutil.AttachMode
		err  string // in the error; "" for none
	}{
		{"auto", bpfutil.ModeAuto, ""},
		{"native", bpfutil.ModeNative, ""},
		{"generic", bpfutil.ModeGeneric, ""},
		{"", 0, `xdp attach mode "": must be auto, native or generic`},
		{"Native", 0, `xdp attach mode "Native": must be auto, native or generic`},
		{"drv", 0, `"drv": must be`},
		{"skb", 0, `"skb": must be`},
		{"offload", 0, `"offload": must be`},
		{" native", 0, `" native": must be`},
	} {
		got, err := bpfutil.ParseAttachMode(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseAttachMode(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseAttachMode(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.err)
		case tc.err == "" && (got != tc.want || got.String() != tc.in):
			t.Errorf("ParseAttachMode(%q) = %v (%d), want %v (%d) printing as %q", tc.in, got, got, tc.want, tc.want, tc.in)
		}
	}
	if s := bpfutil.AttachMode(9).String(); s != "AttachMode(9)" {
		t.Errorf("AttachMode(9).String() = %q", s)
	}
}

// TestAttachRefusesInvalidMode: a mode value outside the constants is an
// error before anything is attached (it used to mean native).
func TestAttachRefusesInvalidMode(t *testing.T) {
	for _, m := range []bpfutil.AttachMode{3, 9, 255} {
		got, l, err := bpfutil.Attach(nil, 1, m)
		if err == nil || !strings.Contains(err.Error(), "invalid xdp attach mode "+m.String()) {
			t.Errorf("Attach(mode %d) = %v, %v, %v; want an invalid-mode error", uint8(m), got, l, err)
		}
		if l != nil {
			l.Close()
		}
	}
}

// The attach modes IFLA_XDP_ATTACHED reports (linux/if_link.h).
const (
	xdpAttachedDrv = 1
	xdpAttachedSkb = 2
)

// TestAttachModes: on a veth (whose driver has native XDP) each mode
// attaches where it says, as the kernel reports it, and Attach returns
// the mode it used; auto attaches generically on veth (AutoGeneric).
func TestAttachModes(t *testing.T) {
	ns := nstest.Veth(t, "xc-bpfu", "a0", "b0")
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		t.Fatalf("load xdp program: %v", err)
	}
	defer prog.Close()
	for _, tc := range []struct {
		mode, want bpfutil.AttachMode
		kernel     uint32 // the attach mode netlink reports
	}{
		{bpfutil.ModeAuto, bpfutil.ModeGeneric, xdpAttachedSkb}, // generic first on veth
		{bpfutil.ModeNative, bpfutil.ModeNative, xdpAttachedDrv},
		{bpfutil.ModeGeneric, bpfutil.ModeGeneric, xdpAttachedSkb},
	} {
		var (
			got bpfutil.AttachMode
			l   link.Link
			nl  netlink.Link
		)
		err := ns.Do(func() (err error) {
			if nl, err = netlink.LinkByName("a0"); err != nil {
				return err
			}
			if got, l, err = bpfutil.Attach(prog, nl.Attrs().Index, tc.mode); err != nil {
				return err
			}
			nl, err = netlink.LinkByName("a0")
			return err
		})
		if err != nil {
			t.Fatalf("attach %s: %v", tc.mode, err)
		}
		x := nl.Attrs().Xdp
		if got != tc.want || x == nil || !x.Attached || x.AttachMode != tc.kernel {
			t.Errorf("Attach(%s) = %s, kernel reports %+v; want %s, attach mode %d", tc.mode, got, x, tc.want, tc.kernel)
		}
		if err := l.Close(); err != nil {
			t.Errorf("detach %s: %v", tc.mode, err)
		}
	}
}
