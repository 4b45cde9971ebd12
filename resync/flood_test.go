package resync

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestIdleConnectionsDoNotLockOut: whoever reaches the resync port
// without the secret cannot hold every slot with idle connections: a
// newcomer evicts the oldest unauthenticated one, so a legitimate pull
// goes through while the idle ones stay open.
func TestIdleConnectionsDoNotLockOut(t *testing.T) {
	for _, tr := range []transport{pipeTransport, tcpTransport} {
		t.Run(tr.name, func(t *testing.T) {
			ln, dial, addr := tr.listen(t)
			serve(t, &Server{Secret: secretA, Params: testParams, Export: exporter(10), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, ln)
			var idle []net.Conn
			for range 2 * (DefaultMaxConcurrent + extraPending) {
				c, err := dial(context.Background(), addr)
				if err != nil {
					t.Fatal(err)
				}
				idle = append(idle, c)
			}
			t.Cleanup(func() {
				for _, c := range idle {
					c.Close()
				}
			})
			time.Sleep(50 * time.Millisecond)
			c := &checker{t: t}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := Pull(ctx, addr, PullOptions{Secret: secretA, Params: testParams, MaxRecords: 100, Merge: c.merge, Dial: dial})
			if err != nil || st.Records != 10 {
				t.Fatalf("a legitimate pull while %d unauthenticated idle connections were opened: %d records, %v", len(idle), st.Records, err)
			}
		})
	}
}
