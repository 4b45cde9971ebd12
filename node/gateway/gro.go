package gateway

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ETHTOOL_GGRO and ETHTOOL_SGRO (linux/ethtool.h): get and set generic
// receive offload.
const (
	ethtoolGGRO = 0x2b
	ethtoolSGRO = 0x2c
)

// ethtoolSocket opens the socket the ethtool calls go through: they name
// interfaces in the network namespace the socket was opened in (the
// calling thread's), whichever thread makes them later.
func ethtoolSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("ethtool socket: %w", err)
	}
	return fd, nil
}

// groOn reports whether generic receive offload is on for the interface
// (ETHTOOL_GGRO), through fd (ethtoolSocket). GRO merges a TCP flow's
// segments before the stack's packet sockets see them, so a raw socket
// receives a merged packet longer than the MTU, which a ring slot
// truncates; XDP, and so AF_XDP, runs before GRO and never sees one.
func groOn(fd int, ifname string) (bool, error) {
	v, err := ethtoolValue(fd, ifname, ethtoolGGRO, 0)
	return v != 0, err
}

// setGRO turns generic receive offload on or off for the interface,
// through fd (ethtoolSocket).
func setGRO(fd int, ifname string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := ethtoolValue(fd, ifname, ethtoolSGRO, v)
	return err
}

// ethtoolValue runs an ethtool command that takes and returns a struct
// ethtool_value through fd, and returns its data.
func ethtoolValue(fd int, ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q: longer than %d bytes", ifname, unix.IFNAMSIZ-1)
	}
	val := struct{ cmd, data uint32 }{cmd, data}
	var ifr struct { // struct ifreq: the name, then a union of 24 bytes
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, fmt.Errorf("ethtool command %#x on %s: %w", cmd, ifname, errno)
	}
	return val.data, nil
}
