package conntrack

import (
	"fmt"
	"testing"
)

// checkNames fails for each value of T from 0 whose String is not want's.
func checkNames[T interface {
	~uint8
	fmt.Stringer
}](t *testing.T, want []string) {
	t.Helper()
	for v, w := range want {
		if got := T(v).String(); got != w {
			t.Errorf("%T(%d) = %q, want %q", T(v), v, got, w)
		}
	}
}

// TestNames: the generated String methods give exactly the names they
// gave when they were written by hand: iptables' --ctstate names, the
// kernel's TCP state names, and the Reason metric labels (an interface).
// NoReason was "" and is never a label (the counters start at 1).
func TestNames(t *testing.T) {
	states := []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}
	reasons := []string{"none", "tcp_no_syn", "tcp_bad_flags", "tcp_bad_transition", "icmp_not_new",
		"icmp_error_no_conn", "icmp_error_mismatch", "icmp_error_bad_inner", "fragment_without_head", "table_full", "not_ip", "new_refused"}
	tcp := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if len(states) != NumStates || len(reasons) != NumReasons || len(tcp) != numTCPStates {
		t.Fatalf("named here: %d states, %d reasons, %d TCP states; declared %d, %d, %d",
			len(states), len(reasons), len(tcp), NumStates, NumReasons, numTCPStates)
	}
	checkNames[State](t, states)
	checkNames[Reason](t, reasons)
	checkNames[TCPState](t, tcp)
	if tcpInvalid.String() != "INVALID" || tcpIgnore.String() != "INVALID" {
		t.Errorf("sIV %q, sIG %q, want INVALID", tcpInvalid, tcpIgnore)
	}
}
