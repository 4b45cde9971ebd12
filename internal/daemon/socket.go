package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// umaskMu serialises the daemons of one process around their umask
// change (the umask is process-wide).
var umaskMu sync.Mutex

// listenControl creates the control socket at path, mode 0600 from the
// moment it exists (never world-writable, whatever the umask). A path
// that exists already is replaced only if it is a socket nobody answers
// on (a crashed run's); anything else, a file, a directory, a link, or a
// socket a daemon answers on, is refused and left as it is.
func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control.socket %s: directory: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	umaskMu.Lock()
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	return ln, nil
}

// removeStaleSocket removes path if it is a socket that refuses
// connections; it returns nil if path does not exist, and an error naming
// what path is otherwise.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control.socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control.socket %s: exists and is %s, not a socket; refusing to replace it (remove it yourself or set control.socket to another path)", path, kind(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control.socket %s: another xdpcluster answers on it (see xdpcluster ctl --socket %s status); stop it first or set control.socket to another path", path, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control.socket %s: a socket exists there and cannot be probed (%v); refusing to replace it", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("control.socket %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// kind names a file type for error messages.
func kind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return "not a socket (" + m.Type().String() + ")"
}
