package gateway

// ReconcileOnce runs one reconciliation of the flow cache with the
// tracker now (tests; the gateway runs it every reconcileEvery).
func (g *Gateway) ReconcileOnce() int { return g.reconcileOnce() }
