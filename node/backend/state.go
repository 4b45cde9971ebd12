package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// AddrProto marks the cluster addresses a back-end node puts on lo
// (IFA_PROTO, Linux 6.1+; `ip addr` shows it as "proto 0x78"), so that
// they are never taken for the operator's. IPv4 ones also carry the label
// lo:xdpc.
const AddrProto = 0x78

const (
	ifaProto  = 11 // IFA_PROTO, not in x/sys yet
	addrLabel = "lo:xdpc"
)

// changes is the record of what a node changed on the host, written to
// the state directory before each change, so that the next start undoes
// the changes of a run that did not stop cleanly (kill -9, a crash, a
// power cut of the container).
type changes struct {
	PID       int               `json:"pid"`
	Netns     uint64            `json:"netns_inode"`
	Addresses []string          `json:"lo_addresses"` // prefixes added to lo
	Sysctls   map[string]string `json:"sysctls"`      // path: the value before ours
}

// arpSysctls are the ARP sysctls a back-end node sets on each data
// interface, with its values.
var arpSysctls = [][2]string{{"arp_ignore", "1"}, {"arp_announce", "2"}}

// arpSysctlPath is the file of ARP sysctl key on interface ifname.
func arpSysctlPath(ifname, key string) string {
	return "/proc/sys/net/ipv4/conf/" + ifname + "/" + key
}

// sysctlRoot is where the sysctls a record may name live.
const sysctlRoot = "/proc/sys/net/"

// recordedSysctl returns the cleaned path of a sysctl named in a record,
// or an error if it is not under /proc/sys/net/ once cleaned (a record
// is a file on disk: "/proc/sys/net/../../etc/x" must not be written).
func recordedSysctl(path string) (string, error) {
	c := filepath.Clean(path)
	if !strings.HasPrefix(c, sysctlRoot) {
		return "", fmt.Errorf("sysctl path %q is %s, not under %s", path, c, sysctlRoot)
	}
	return c, nil
}

// netnsInode identifies the calling thread's network namespace.
func netnsInode() (uint64, error) {
	fi, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("network namespace: %w", err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// openState takes the lock of this namespace's record in dir (one
// back-end node per namespace manages lo) and undoes what a previous run
// recorded and did not undo itself. Call it with the thread in the
// server's namespace, before any change. Without a record, only the
// marked addresses among ours (the configured cluster addresses) are
// removed: a marked address that is not could be another node's. If
// there were such addresses, the previous run was ours and crashed, but
// the sysctl values it replaced are unknown: the ARP sysctls of ifaces
// still at the values a back end sets are reset to the kernel default 0,
// with a WARN saying the operator's values were unknown.
func (n *Node) openState(dir string, ours []netip.Addr, ifaces []string, log *slog.Logger) error {
	ino, err := netnsInode()
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("backend: state_dir %s: %w", dir, err)
	}
	base := filepath.Join(dir, "backend-net"+strconv.FormatUint(ino, 10))
	lock, err := os.OpenFile(base+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("backend: state_dir lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		owner := "another process"
		if b, err := os.ReadFile(base + ".lock"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			owner = "pid " + strings.TrimSpace(string(b))
		}
		return fmt.Errorf("backend: another xdpcluster back-end node (%s) runs in this network namespace and manages lo (lock %s held): stop it first", owner, base+".lock")
	}
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	n.lock = lock
	n.statePath = base + ".json"
	n.rec = changes{PID: os.Getpid(), Netns: ino, Sysctls: map[string]string{}}

	// A record left by a run that did not stop cleanly: undo it, and any
	// address marked ours.
	var old changes
	recorded := false
	b, err := os.ReadFile(n.statePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("backend: read %s: %w", n.statePath, err)
	default:
		if err := json.Unmarshal(b, &old); err != nil {
			log.Warn("back-end state record unreadable; undoing only the addresses marked ours", "file", n.statePath, "error", err)
			old = changes{}
		} else {
			recorded = true
		}
	}
	var undone []string
	var errs []error
	marked, err := markedAddrs(n.lo.Attrs().Index)
	if err != nil {
		return fmt.Errorf("backend: list lo addresses: %w", err)
	}
	del := map[netip.Prefix]bool{}
	for _, p := range marked {
		for _, a := range ours {
			if p.Addr() == a {
				del[p] = true
			}
		}
	}
	crashedUnrecorded := !recorded && len(del) > 0
	for _, s := range old.Addresses {
		if p, err := netip.ParsePrefix(s); err == nil {
			del[p] = true
		}
	}
	have, _ := n.handle.AddrList(n.lo, netlink.FAMILY_ALL)
	for p := range del {
		if !onLo(have, p.Addr()) {
			continue
		}
		a := netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := n.handle.AddrDel(n.lo, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove %s from lo: %w", p, err))
			continue
		}
		undone = append(undone, "lo address "+p.String())
	}
	for path, v := range old.Sysctls {
		path, err := recordedSysctl(path)
		if err != nil {
			log.Warn("back-end state record names a sysctl outside "+sysctlRoot+"; not restoring it", "record", n.statePath, "error", err)
			continue
		}
		if err := os.WriteFile(path, []byte(v), 0); err != nil {
			if !errors.Is(err, os.ErrNotExist) { // the interface is gone: nothing to restore
				errs = append(errs, fmt.Errorf("restore %s=%s: %w", path, v, err))
			}
			continue
		}
		undone = append(undone, fmt.Sprintf("%s=%s", strings.TrimPrefix(path, "/proc/sys/"), v))
	}
	if crashedUnrecorded {
		var reset []string
		for _, name := range ifaces {
			for _, kv := range arpSysctls {
				path := arpSysctlPath(name, kv[0])
				cur, err := os.ReadFile(path)
				if err != nil || strings.TrimSpace(string(cur)) != kv[1] {
					continue // not at our value: not ours to reset
				}
				if err := os.WriteFile(path, []byte("0"), 0); err != nil {
					errs = append(errs, fmt.Errorf("reset %s=0: %w", path, err))
					continue
				}
				reset = append(reset, fmt.Sprintf("%s=0", strings.TrimPrefix(path, "/proc/sys/")))
			}
		}
		if len(reset) > 0 {
			log.Warn("a previous back-end run left its addresses on lo but no record of the sysctl values it replaced: the operator's values are unknown, so those still at the back end's values were reset to the kernel default; set them again if yours differ",
				"reset", strings.Join(reset, ", "), "record", n.statePath)
		}
	}
	if len(undone) > 0 {
		log.Warn("undid the changes of a previous back-end run that did not stop cleanly", "pid", old.PID, "undone", strings.Join(undone, ", "), "record", n.statePath)
	}
	if err := errors.Join(errs...); err != nil {
		n.keepState = true // for the next start to retry
		return fmt.Errorf("backend: undo a previous run's changes (record %s): %w", n.statePath, err)
	}
	return n.saveState()
}

// saveState writes the record (atomically: a crash leaves the old one or
// the new one).
func (n *Node) saveState() error {
	if n.statePath == "" {
		return nil
	}
	b, _ := json.MarshalIndent(n.rec, "", "  ")
	tmp := n.statePath + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("backend: record changes: %w", err)
	}
	if err := os.Rename(tmp, n.statePath); err != nil {
		return fmt.Errorf("backend: record changes: %w", err)
	}
	return nil
}

// closeState removes the record once everything is undone (clean is
// false when something could not be: the next start retries) and
// releases the lock.
func (n *Node) closeState(clean bool) {
	if n.statePath != "" && clean && !n.keepState {
		os.Remove(n.statePath)
	}
	if n.lock != nil {
		n.lock.Close()
	}
}

// addMarked adds prefix p to lo marked as ours. Call it with the thread in
// the server's namespace.
func addMarked(loIndex int, p netip.Prefix) error {
	fam := unix.AF_INET
	if p.Addr().Is6() {
		fam = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewIfAddrmsg(fam)
	msg.Index = uint32(loIndex)
	msg.Prefixlen = uint8(p.Bits())
	req.AddData(msg)
	ip := p.Addr().AsSlice()
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip))
	var flags uint32
	if fam == unix.AF_INET {
		req.AddData(nl.NewRtAttr(unix.IFA_LABEL, nl.ZeroTerminated(addrLabel)))
	} else {
		flags = unix.IFA_F_NODAD // the servers share it: no duplicate address detection
		msg.Flags = uint8(flags)
	}
	req.AddData(nl.NewRtAttr(unix.IFA_FLAGS, nl.Uint32Attr(flags)))
	req.AddData(nl.NewRtAttr(ifaProto, nl.Uint8Attr(AddrProto)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// markedAddrs lists the addresses on lo marked ours. Call it with the
// thread in the server's namespace.
func markedAddrs(loIndex int) ([]netip.Prefix, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfAddrmsg(unix.AF_UNSPEC))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if len(m) < unix.SizeofIfAddrmsg {
			continue
		}
		ifa := nl.DeserializeIfAddrmsg(m)
		if int(ifa.Index) != loIndex {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfAddrmsg:])
		if err != nil {
			continue
		}
		var ip netip.Addr
		ours := false
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFA_ADDRESS, unix.IFA_LOCAL:
				if v, ok := netip.AddrFromSlice(a.Value); ok {
					ip = v.Unmap()
				}
			case ifaProto:
				ours = len(a.Value) == 1 && a.Value[0] == AddrProto
			}
		}
		if ours && ip.IsValid() {
			out = append(out, netip.PrefixFrom(ip, int(ifa.Prefixlen)))
		}
	}
	return out, nil
}
