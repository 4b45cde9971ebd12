package conntrack

import "testing"

// TestNames: the generated String methods give exactly the names they
// gave when they were written by hand: iptables' --ctstate names, the
// kernel's TCP state names, and the Reason metric labels (an interface).
func TestNames(t *testing.T) {
	states := []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}
	if len(states) != NumStates {
		t.Fatalf("%d states named here, NumStates %d", len(states), NumStates)
	}
	for s, want := range states {
		if got := State(s).String(); got != want {
			t.Errorf("State(%d) = %q, want %q", s, got, want)
		}
	}
	// NoReason was "" and is never a label (the counters start at 1).
	reasons := []string{"none", "tcp_no_syn", "tcp_bad_flags", "tcp_bad_transition", "icmp_not_new",
		"icmp_error_no_conn", "icmp_error_mismatch", "icmp_error_bad_inner", "fragment_without_head", "table_full", "not_ip"}
	if len(reasons) != NumReasons {
		t.Fatalf("%d reasons named here, NumReasons %d", len(reasons), NumReasons)
	}
	for r, want := range reasons {
		if got := Reason(r).String(); got != want {
			t.Errorf("Reason(%d) = %q, want %q", r, got, want)
		}
	}
	tcp := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if len(tcp) != numTCPStates {
		t.Fatalf("%d TCP states named here, numTCPStates %d", len(tcp), numTCPStates)
	}
	for s, want := range tcp {
		if got := TCPState(s).String(); got != want {
			t.Errorf("TCPState(%d) = %q, want %q", s, got, want)
		}
	}
	if tcpInvalid.String() != "INVALID" || tcpIgnore.String() != "INVALID" {
		t.Errorf("sIV %q, sIG %q, want INVALID", tcpInvalid, tcpIgnore)
	}
}
