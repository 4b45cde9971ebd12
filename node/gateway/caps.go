package gateway

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// afxdpCaps are the capabilities AF_XDP with our XDP program needs, by
// bit number: attaching XDP and netlink, AF_XDP sockets, loading the
// program and its maps, the verifier's leave to copy pointers (without
// CAP_PERFMON it refuses the program), locking the UMEM.
var afxdpCaps = []struct {
	bit  uint
	name string
}{{12, "CAP_NET_ADMIN"}, {13, "CAP_NET_RAW"}, {39, "CAP_BPF"}, {38, "CAP_PERFMON"}, {14, "CAP_IPC_LOCK"}}

const capSysAdmin = 21 // stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8 know only it)

// missingCaps names the capabilities of afxdpCaps this process lacks
// (read from /proc/self/status's CapEff), nil when it has them all or
// cannot tell.
func missingCaps() []string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return nil
		}
		var missing []string
		for _, c := range afxdpCaps {
			if eff&(1<<c.bit) != 0 || (c.name == "CAP_BPF" || c.name == "CAP_PERFMON") && eff&(1<<capSysAdmin) != 0 {
				continue
			}
			missing = append(missing, c.name)
		}
		return missing
	}
	return nil
}

// capsHint is what an AF_XDP set-up error adds when capabilities are
// missing: which, and what the daemon needs ("" when none is missing: the
// error then comes from the kernel or the driver).
func capsHint() string {
	m := missingCaps()
	if len(m) == 0 {
		return ""
	}
	return "; the process lacks " + strings.Join(m, ", ") + " (AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON and CAP_IPC_LOCK, or root)"
}
