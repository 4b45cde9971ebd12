// Package nstest adapts package netns to tests: namespaces that are
// removed by t.Cleanup even when the test fails, and a skip with the remedy
// when the test does not run as root.
package nstest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/internal/netns"
)

// Require skips the test, saying why and what to do, unless namespaces can
// be created.
func Require(t testing.TB) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v; run the tests as root (sudo make test) to include this one", err)
	}
}

// New creates a namespace prefix-RANDOM that is deleted when the test ends.
func New(t testing.TB, prefix string) *netns.NS {
	t.Helper()
	Require(t)
	ns, err := netns.Create(prefix)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ns
}

// Cluster builds a netns.NewCluster topology (prefix-RANDOM names) that is
// removed when the test ends.
func Cluster(t testing.TB, prefix string, opts netns.ClusterOptions) *netns.Cluster {
	t.Helper()
	Require(t)
	cl, err := netns.NewCluster(prefix, opts)
	if err != nil {
		if cl != nil {
			cl.Close()
		}
		t.Fatalf("build the cluster topology: %v", err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cl
}

// Veth creates a namespace prefix-RANDOM, deleted when the test ends,
// holding a veth pair a–b with both ends up.
func Veth(t testing.TB, prefix, a, b string) *netns.NS {
	t.Helper()
	ns := New(t, prefix)
	Run(t, ns, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	Run(t, ns, "ip", "link", "set", a, "up")
	Run(t, ns, "ip", "link", "set", b, "up")
	return ns
}

// Run runs a command in ns and fails the test if it fails.
func Run(t testing.TB, ns *netns.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// MAC returns the hardware address of dev in ns.
func MAC(t testing.TB, ns *netns.NS, dev string) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(strings.TrimSpace(Run(t, ns, "cat", "/sys/class/net/"+dev+"/address")))
	if err != nil {
		t.Fatalf("MAC of %s in %s: %v", dev, ns.Name, err)
	}
	return hw
}

// Injector writes raw Ethernet frames out of one interface of a namespace
// (AF_PACKET), for tests that play crafted frames into a kernel.
type Injector struct {
	t       testing.TB
	fd      int
	ifindex int
}

// NewInjector opens a packet socket on dev in ns; it is closed when the
// test ends.
func NewInjector(t testing.TB, ns *netns.NS, dev string) *Injector {
	t.Helper()
	in := &Injector{t: t}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		in.ifindex = ifi.Index
		in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", dev, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

// Send writes one frame; its first six bytes are the destination MAC.
func (in *Injector) Send(frame []byte) {
	in.t.Helper()
	sa := &unix.SockaddrLinklayer{Ifindex: in.ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	if err := unix.Sendto(in.fd, frame, 0, sa); err != nil {
		in.t.Fatalf("send frame: %v", err)
	}
}

// Frames calls fn with each frame of a capture file (e.g. from Capture),
// in order.
func Frames(t testing.TB, file string, fn func(data []byte)) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("read capture %s: %v", file, err)
	}
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			return
		}
		fn(data)
	}
}

// Capture runs tcpdump on dev in ns (immediate mode: nothing is left in
// the kernel's buffer when it stops) until the returned stop is called,
// which returns the capture file. It is stopped at cleanup too.
func Capture(t testing.TB, ns *netns.NS, dev, filter string) (stop func() string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), ns.Name+"-"+dev+".pcap")
	// Immediate mode gives one ring slot per snaplen (256 KB): the default
	// 2 MB buffer holds 8 frames and drops when the machine is busy, so
	// the buffer is 64 MB (-B, in KiB).
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-B", "65536", "-w", file, filter)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	ready := make(chan struct{})
	var dropped string // tcpdump's "N packets dropped by kernel" line
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		started := false
		for sc.Scan() {
			line := sc.Text()
			if !started && strings.Contains(line, "listening on") {
				started = true
				close(ready)
			}
			if strings.Contains(line, "dropped by kernel") && !strings.HasPrefix(line, "0 ") {
				dropped = line
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("tcpdump did not start")
	}
	var once sync.Once
	stop = func() string {
		once.Do(func() {
			time.Sleep(200 * time.Millisecond) // the last packets
			cmd.Process.Signal(syscall.SIGINT)
			<-done
			cmd.Wait()
			if dropped != "" {
				t.Errorf("tcpdump on %s/%s lost frames (%s): the capture is incomplete", ns.Name, dev, dropped)
			}
		})
		return file
	}
	t.Cleanup(func() { stop() })
	return stop
}

// Echo starts netns EchoServers and stops them at cleanup.
func Echo(t testing.TB, ns *netns.NS, tcpAddr, udpAddr string) {
	t.Helper()
	stop, err := ns.EchoServers(tcpAddr, udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

// LogBuffer is a bytes.Buffer safe for concurrent writes, for a test's
// slog handler (the code under test logs from its own goroutines).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Sink counts the datagrams a UDP socket in a test's namespace receives,
// by payload: the exactly-once checks of the cluster tests send numbered
// datagrams (SeqPayload) and count what arrived.
type Sink struct {
	mu   sync.Mutex
	seen map[string]int
}

// NewSink listens on addr in ns until the test ends.
func NewSink(t testing.TB, ns *netns.NS, addr netip.AddrPort) *Sink {
	t.Helper()
	c, err := ns.ListenUDP(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &Sink{seen: map[string]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen[string(buf[:n])]++
			s.mu.Unlock()
		}
	}()
	return s
}

// Reset forgets what arrived so far.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.seen)
}

// Count is how many datagrams with this payload arrived.
func (s *Sink) Count(payload []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[string(payload)]
}

// SeqPayload is datagram i of source src: the source's 4 or 16 bytes,
// then i (8 bytes, big-endian).
func SeqPayload(src netip.Addr, i int) []byte {
	return binary.BigEndian.AppendUint64(src.AsSlice(), uint64(i))
}

// LostDup counts, of datagrams 0..count-1 (SeqPayload) from each of
// srcs, how many did not arrive and how many extra copies did.
func (s *Sink) LostDup(srcs []netip.Addr, count int) (lost, dup int) {
	for _, src := range srcs {
		for i := 0; i < count; i++ {
			switch n := s.Count(SeqPayload(src, i)); {
			case n == 0:
				lost++
			case n > 1:
				dup += n - 1
			}
		}
	}
	return lost, dup
}

// Probe forgets what the sink got so far, sends count numbered datagrams
// (SeqPayload) from each of srcs, addresses of ns, to dst (the sink),
// paced a little, waits for the frames in flight, and counts them
// (LostDup).
func (s *Sink) Probe(t testing.TB, ns *netns.NS, srcs []netip.Addr, dst netip.AddrPort, count int) (lost, dup int) {
	t.Helper()
	s.Reset()
	for _, src := range srcs {
		c, err := ns.Dial("udp", src, dst, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < count; i++ {
			c.Write(SeqPayload(src, i))
			if i%10 == 9 {
				time.Sleep(time.Millisecond)
			}
		}
		c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	return s.LostDup(srcs, count)
}

// Repeat calls f on another goroutine again and again until the returned
// stop is called; stop waits for the goroutine and returns how many times
// f ran (e.g. flipping a setting while a test decides packets).
func Repeat(f func()) (stop func() int) {
	quit, done := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-quit:
				done <- n
				return
			default:
			}
			f()
			n++
		}
	}()
	return func() int { close(quit); return <-done }
}

// GRO is ethtool's word for an interface's generic receive offload in ns:
// "on" or "off".
func GRO(t testing.TB, ns *netns.NS, ifc string) string {
	t.Helper()
	for _, l := range strings.Split(Run(t, ns, "ethtool", "-k", ifc), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "generic-receive-offload: "); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("ethtool -k %s: no generic-receive-offload line", ifc)
	return ""
}
