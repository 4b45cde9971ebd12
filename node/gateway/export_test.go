package gateway

import "golang.org/x/sys/unix"

// ReconcileOnce runs one reconciliation of the flow cache with the
// tracker now (tests; the gateway runs it every reconcileEvery).
func (g *Gateway) ReconcileOnce() int { return g.reconcileOnce() }

// closeFD closes a file descriptor a test opened.
func closeFD(fd int) { unix.Close(fd) }
