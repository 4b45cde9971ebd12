package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpcluster/xdpcluster/config"
)

// checkInterfacesFree refuses to start on an interface that another live
// process (another xdpcluster, whatever its configuration, control socket
// or state directory) holds an XDP program on through a bpf_link: starting
// anyway would fall back to raw sockets next to it, or fight it (another
// xdpcluster on raw sockets holds no XDP program: lockInterfaces refuses
// that one). When attachesXDP, a program attached through netlink,
// which no process holds (a crashed older run's, `ip link set xdp`), is
// removed here as the dataplane's own attach would, and one that stays
// attached (a bpf_link this process cannot trace to its holder) is
// refused too. Call it with the thread in the node's network namespace,
// before anything is attached.
func checkInterfacesFree(names []string, attachesXDP bool) error {
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue // the dataplane's start names the missing interface
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
	f, err := os.Open(fdinfo)
	if err != nil {
		return 0
	}
	defer f.Close()
	var xdp bool
	var id uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "link_type":
			xdp = v == "xdp"
		case "prog_id":
			id, _ = strconv.ParseUint(v, 10, 32)
		}
	}
	if !xdp {
		return 0
	}
	return uint32(id)
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

// ifaceLocks are the claims lockInterfaces took, one listener per
// interface.
type ifaceLocks []*net.UnixListener

// lockAddr is the abstract unix socket that claims the interface of index
// ifindex in the calling thread's network namespace.
func lockAddr(ifindex int) *net.UnixAddr {
	return &net.UnixAddr{Name: "@xdpcluster/interface/" + strconv.Itoa(ifindex), Net: "unix"}
}

// lockInterfaces claims each interface for this daemon with a listening
// abstract unix socket named after its index. Abstract names, like
// interface indexes, belong to a network namespace, and the kernel frees
// one when its process dies, so a crashed daemon leaves no claim behind.
// Another daemon's claim makes the bind fail: lockInterfaces then
// connects to it, learns the holder's PID from the kernel (SO_PEERCRED)
// and refuses, naming it. The holder accepts and closes every such
// connection, so any number of refused starts find it answering. Unlike
// an XDP program, which the kernel attaches once per interface, raw
// sockets and tc programs can be opened next to another daemon's, so this
// is what stops a second one there; it holds whatever the holder's user,
// sandbox (a unit's ProtectProc hides other processes) or executable name.
// Call it with the thread in the node's network namespace; release the
// claims when the dataplane has stopped.
func lockInterfaces(names []string) (ifaceLocks, error) {
	var locks ifaceLocks
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			continue // the dataplane's start names the missing interface
		}
		addr := lockAddr(l.Attrs().Index)
		var ln *net.UnixListener
		for try := 0; ; try++ {
			if ln, err = net.ListenUnix("unix", addr); err == nil {
				break
			}
			if !errors.Is(err, unix.EADDRINUSE) {
				locks.release()
				return nil, fmt.Errorf("claim interface %s: %w", name, err)
			}
			holder, known := lockHolder(addr)
			if known || try > 0 {
				locks.release()
				return nil, fmt.Errorf("interface %s is in use: another xdpcluster claims it (%s); stop it first (refusing to start next to it)", name, holder)
			}
			// The holder went between the bind and the connect: once more.
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return // released
				}
				c.Close()
			}
		}()
		locks = append(locks, ln)
	}
	return locks, nil
}

// lockHolder describes the process listening on a claim: its PID and user
// (from the kernel), and what describeProcess can add where /proc shows
// it; known is false when no process answered.
func lockHolder(addr *net.UnixAddr) (desc string, known bool) {
	c, err := net.DialTimeout("unix", addr.Name, 2*time.Second)
	if err != nil {
		return "its PID unknown: " + err.Error(), false
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return "its PID unknown: " + err.Error(), true
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return fmt.Sprintf("its PID unknown: %v", errors.Join(err, cerr)), true
	}
	if cred.Pid == 0 { // in a PID namespace this one cannot see
		return fmt.Sprintf("a process of uid %d outside this PID namespace", cred.Uid), true
	}
	return fmt.Sprintf("%s, uid %d", describeProcess(strconv.Itoa(int(cred.Pid))), cred.Uid), true
}

// release gives the claims up.
func (l ifaceLocks) release() {
	for _, ln := range l {
		ln.Close()
	}
}
