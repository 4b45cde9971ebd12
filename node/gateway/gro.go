package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
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

// groState is the record of the interfaces whose GRO the gateway turned
// off (Config.GROState), with the network namespace they are in.
type groState struct {
	Netns      uint64   `json:"netns_inode"`
	Interfaces []string `json:"interfaces"`
}

// netnsInode identifies the calling thread's network namespace.
func netnsInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("network namespace: %w", err)
	}
	return st.Ino, nil
}

// writeGROState records names in path (nothing without a path), in the
// calling thread's namespace, replacing the file atomically.
func writeGROState(path string, names []string) error {
	if path == "" {
		return nil
	}
	ino, err := netnsInode()
	if err != nil {
		return err
	}
	b, err := json.Marshal(groState{Netns: ino, Interfaces: names})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// readGROState returns the interfaces path records, if the record was
// written in the calling thread's namespace (another namespace's
// interfaces of the same names are not ours); none if there is no record.
func readGROState(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st groState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ino, err := netnsInode()
	if err != nil || st.Netns != ino {
		return nil, err
	}
	return st.Interfaces, nil
}
