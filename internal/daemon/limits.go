package daemon

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bounds what the metrics endpoint and the control API hold, so
// that no client, local or remote, can exhaust the daemon's file
// descriptors or memory, and the control socket keeps answering whatever
// happens on the metrics port. The zero value of a field means its
// default.
type Limits struct {
	MetricsConns int           // concurrent metrics connections (default 64)
	ControlConns int           // concurrent control connections (default 16)
	ReadTimeout  time.Duration // to read a whole request, headers included (default 10s)
	WriteTimeout time.Duration // to write a response (default 30s)
	IdleTimeout  time.Duration // a keep-alive connection waiting for its next request (default 30s)
}

// withDefaults fills in the zero fields.
func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MetricsConns <= 0 {
		l.MetricsConns = 64
	}
	if l.ControlConns <= 0 {
		l.ControlConns = 16
	}
	def(&l.ReadTimeout, 10*time.Second)
	def(&l.WriteTimeout, 30*time.Second)
	def(&l.IdleTimeout, 30*time.Second)
	return l
}

// limitListener holds at most cap(slots) accepted connections at a time.
// A connection accepted beyond the limit is closed at once: it costs no
// descriptor, goroutine or buffer, and does not wait in the kernel's
// backlog in front of the next legitimate client.
type limitListener struct {
	net.Listener
	slots   chan struct{}
	refused atomic.Uint64
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n)}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, l: l}, nil
		default:
			l.refused.Add(1)
			c.Close()
		}
	}
}

// Active is the number of connections held.
func (l *limitListener) Active() int { return len(l.slots) }

// limitConn gives its slot back when it is closed (once).
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.slots })
	return err
}
