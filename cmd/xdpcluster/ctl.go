package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/xdpcluster/xdpcluster/cluster"
)

// ctlRequest turns `ctl` arguments into a control API request, checking
// node numbers and masks before anything is sent; values go into the
// query escaped.
func ctlRequest(a []string) (method, path string, err error) {
	switch {
	case len(a) == 1 && a[0] == "status":
		return "GET", "/status", nil
	case len(a) == 1 && a[0] == "health":
		return "GET", "/health", nil
	case len(a) == 1 && a[0] == "reload":
		return "POST", "/reload", nil
	case len(a) == 2 && (a[0] == "takeover" || a[0] == "release"):
		n, err := ctlNumber(a[1], 1, cluster.MaxNodes)
		if err != nil {
			return "", "", fmt.Errorf("%s: node %w", a[0], err)
		}
		return "POST", "/" + a[0] + "?" + url.Values{"node": {strconv.FormatUint(n, 10)}}.Encode(), nil
	case len(a) == 2 && a[0] == "set-mask":
		n, err := ctlNumber(a[1], 1, 0xffffffff)
		if err != nil {
			return "", "", fmt.Errorf("set-mask: mask %w (a non-zero 32-bit mask of nodes)", err)
		}
		return "POST", "/mask?" + url.Values{"mask": {fmt.Sprintf("%#x", n)}}.Encode(), nil
	}
	return "", "", fmt.Errorf("want status, health, takeover N, release N, set-mask M or reload; got %q", strings.Join(a, " "))
}

// ctlNumber reads a number as iptables does and checks it is in lo..hi.
func ctlNumber(s string, lo, hi uint64) (uint64, error) {
	n, err := cluster.ParseNumber(s)
	// A number too big for 64 bits is out of range like any other.
	if err != nil && !strings.Contains(err.Error(), "out of range") {
		return 0, fmt.Errorf("%q: not a number (decimal, 0x hex, or 0-prefixed octal)", s)
	}
	if err != nil || n < lo || n > hi {
		if hi > 0xffff {
			return 0, fmt.Errorf("%s: must be %#x..%#x", strings.TrimSpace(s), lo, hi)
		}
		return 0, fmt.Errorf("%s: must be %d..%d", strings.TrimSpace(s), lo, hi)
	}
	return n, nil
}
