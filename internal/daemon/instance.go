package daemon

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/config"
)

// checkInterfacesFree refuses to start on an interface that another live
// process (another xdpcluster, whatever its configuration, control socket
// or state directory) holds an XDP program on through a bpf_link, or that
// another xdpcluster process in this network namespace holds a tc (tcx)
// program on (its fast path with raw sockets): starting anyway would fall
// back to raw sockets next to it, run a second fast path beside its own,
// or fight it. When attachesXDP, a program attached through netlink,
// which no process holds (a crashed older run's, `ip link set xdp`), is
// removed here as the dataplane's own attach would, and one that stays
// attached (a bpf_link this process cannot trace to its holder) is
// refused too. Call it with
// the thread in the node's network namespace, before anything is
// attached.
func checkInterfacesFree(names []string, attachesXDP bool) error {
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue // the dataplane's start names the missing interface
		}
		if h := tcHolder(l.Attrs().Index); h != "" {
			return fmt.Errorf("interface %s is in use: a tc program is attached to it through a bpf_link held by %s; is another xdpcluster running on it? Stop it first (refusing to start next to it)", name, h)
		}
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			continue
		}
		if h := xdpHolder(x.ProgId); h != "" {
			return fmt.Errorf("interface %s is in use: XDP program id %d is attached to it through a bpf_link held by %s; is another xdpcluster running on it? Stop it first (refusing to start next to it)", name, x.ProgId, h)
		}
		if !attachesXDP {
			continue
		}
		netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_DRV_MODE)
		netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_SKB_MODE)
		if l, err = netlink.LinkByName(name); err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			return fmt.Errorf("interface %s is in use: XDP program id %d is attached to it through a bpf_link that cannot be replaced, held by a process this one cannot see (run as root to name it) or pinned; is another xdpcluster running on it? Stop it first (refusing to start next to it)", name, l.Attrs().Xdp.ProgId)
		}
	}
	return nil
}

// xdpHolder names the process holding a bpf_link to XDP program id: its
// PID, command line, and for an xdpcluster its configuration file and
// control socket. It returns "" when no process it can see holds one.
func xdpHolder(id uint32) string {
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fdDir := range procs {
		pid := filepath.Base(filepath.Dir(fdDir))
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || target != "anon_inode:bpf_link" {
				continue
			}
			if linkProgID(filepath.Join("/proc", pid, "fdinfo", fd.Name())) == id {
				return describeProcess(pid)
			}
		}
	}
	return ""
}

// linkProgID reads the prog_id of an XDP bpf_link's fdinfo (0 if it is
// not one).
func linkProgID(fdinfo string) uint32 {
	f := linkFields(fdinfo)
	if f["link_type"] != "xdp" {
		return 0
	}
	id, _ := strconv.ParseUint(f["prog_id"], 10, 32)
	return uint32(id)
}

// linkFields reads a bpf_link's fdinfo as key: value (nil if it cannot).
func linkFields(fdinfo string) map[string]string {
	f, err := os.Open(fdinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	fields := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// tcHolder names another xdpcluster process (its executable is named
// xdpcluster) in this thread's network namespace that holds a tcx
// bpf_link on ifindex, "" when none does. Interface indexes are per
// namespace, and other software may attach tc programs of its own, so
// only an xdpcluster in the same namespace counts.
func tcHolder(ifindex int) string {
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return ""
	}
	own := strconv.Itoa(os.Getpid())
	want := strconv.Itoa(ifindex)
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fdDir := range procs {
		dir := filepath.Dir(fdDir)
		pid := filepath.Base(dir)
		if pid == own {
			continue
		}
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "xdpcluster" {
			continue
		}
		if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err != nil || ns != self {
			continue
		}
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || target != "anon_inode:bpf_link" {
				continue
			}
			if f := linkFields(filepath.Join(dir, "fdinfo", fd.Name())); f["link_type"] == "tcx" && f["ifindex"] == want {
				return describeProcess(pid)
			}
		}
	}
	return ""
}

func describeProcess(pid string) string {
	s := "pid " + pid
	if pid == strconv.Itoa(os.Getpid()) {
		s += " (this process)"
	}
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil {
		return s
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	cmd := strings.Join(args, " ")
	if len(cmd) > 200 {
		cmd = cmd[:200] + "..."
	}
	s += fmt.Sprintf(" (%q)", cmd)
	for i, a := range args {
		var path string
		if a == "--config" || a == "-config" {
			if i+1 < len(args) {
				path = args[i+1]
			}
		} else if v, ok := strings.CutPrefix(a, "--config="); ok {
			path = v
		}
		if path == "" {
			continue
		}
		if !filepath.IsAbs(path) {
			if cwd, err := os.Readlink(filepath.Join("/proc", pid, "cwd")); err == nil {
				path = filepath.Join(cwd, path)
			}
		}
		if c, err := config.Load(path); err == nil {
			s += fmt.Sprintf(", configuration %s, control socket %s", path, c.ControlSocket)
		}
		break
	}
	return s
}
