// Package netns creates and drives Linux network namespaces for tests, the
// benchmark harness and the demo: namespaces with random names, veth pairs,
// bridges, and running code or commands inside a namespace.
//
// It shells out to iproute2 (`ip`) for topology changes, so what it does is
// what an operator would type, and uses setns(2) on a locked OS thread to
// open sockets inside a namespace. An NS is safe for concurrent use; Do
// locks the calling goroutine to its thread for the duration of fn.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRoot is returned when the caller lacks the privileges to create
// namespaces.
var ErrNotRoot = errors.New("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")

// NS is a named network namespace (/run/netns/NAME).
type NS struct {
	Name string
}

// Suffix returns n random hex characters, for names that parallel tests
// never share.
func Suffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)[:n]
}

// Available reports why namespaces cannot be used here, or nil when they can.
func Available() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("iproute2 `ip` not found (apt-get install iproute2): %w", err)
	}
	return nil
}

// Create adds a namespace named prefix-RANDOM and brings its loopback up.
func Create(prefix string) (*NS, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	ns := &NS{Name: prefix + "-" + Suffix(6)}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", ns.Name, err, bytes.TrimSpace(out))
	}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		ns.Close()
		return nil, err
	}
	return ns, nil
}

// Close deletes the namespace; the kernel removes its interfaces (and both
// ends of veth pairs with one end inside) with it.
func (ns *NS) Close() error {
	out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", ns.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Run runs a command inside the namespace and returns its standard output.
// A failure includes the command line and its standard error.
func (ns *NS) Run(name string, args ...string) ([]byte, error) {
	return ns.RunStdin("", name, args...)
}

// RunStdin is Run with the given standard input.
func (ns *NS) RunStdin(stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("in netns %s: %s %s: %w: %s", ns.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Sysctl sets a sysctl inside the namespace, e.g. "net.ipv4.ip_forward", "1".
func (ns *NS) Sysctl(key, value string) error {
	_, err := ns.Run("sysctl", "-qw", key+"="+value)
	return err
}

// Do runs fn with the calling goroutine's thread inside the namespace, then
// returns the thread to its original namespace. Sockets opened by fn stay
// in the namespace after Do returns.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", ns.Name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns.Name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime destroys it when this
		// goroutine exits instead of reusing a thread in the wrong netns.
		return errors.Join(ferr, fmt.Errorf("restore netns after %s: %w", ns.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// EchoServers runs, inside the namespace, a TCP echo on tcpAddr and a UDP
// echo on udpAddr (either may be empty), until stop is called.
func (ns *NS) EchoServers(tcpAddr, udpAddr string) (stop func(), err error) {
	var ln net.Listener
	var pc net.PacketConn
	err = ns.Do(func() (err error) {
		if tcpAddr != "" {
			if ln, err = net.Listen("tcp", tcpAddr); err != nil {
				return err
			}
		}
		if udpAddr != "" {
			pc, err = net.ListenPacket("udp", udpAddr)
		}
		return err
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("echo servers in %s: %w", ns.Name, err)
	}
	if ln != nil {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
	}
	if pc != nil {
		go func() {
			buf := make([]byte, 65536)
			for {
				n, a, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], a)
			}
		}()
	}
	return func() {
		if ln != nil {
			ln.Close()
		}
		if pc != nil {
			pc.Close()
		}
	}, nil
}

// ListenUDP opens a UDP socket on addr inside the namespace.
func (ns *NS) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, ns.Name, err)
	}
	return c, nil
}

// Dial opens a connection ("tcp" or "udp") from local, an address of the
// namespace, to remote; the socket lives in the namespace.
func (ns *NS) Dial(network string, local netip.Addr, remote netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	switch network {
	case "tcp":
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	case "udp":
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	default:
		return nil, fmt.Errorf("dial in %s: network %q: want tcp or udp", ns.Name, network)
	}
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = d.Dial(network, remote.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s -> %s in %s: %w", network, local, remote, ns.Name, err)
	}
	return c, nil
}

// Exchange is one request and reply with an echo-like server: it dials
// from local to remote, sends msg and returns the reply, all within
// timeout. Over TCP it reads len(msg) bytes back; over UDP one datagram.
func (ns *NS) Exchange(network string, local netip.Addr, remote netip.AddrPort, msg []byte, timeout time.Duration) ([]byte, error) {
	c, err := ns.Dial(network, local, remote, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return nil, fmt.Errorf("%s %s -> %s: write: %w", network, local, remote, err)
	}
	var reply []byte
	if network == "tcp" {
		reply = make([]byte, len(msg))
		_, err = io.ReadFull(c, reply)
	} else {
		reply = make([]byte, 65536)
		var n int
		n, err = c.Read(reply)
		reply = reply[:n]
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s -> %s: read reply: %w", network, local, remote, err)
	}
	return reply, nil
}
