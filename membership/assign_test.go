package membership

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// mem builds a compatible member.
func mem(name string, state State, ready bool, home uint32) Member {
	return Member{Name: name, State: state, Compatible: true, Meta: Meta{Home: home, Total: 12, Ready: ready}}
}

// three are 3 nodes of a 12-bucket cluster with 4 home buckets each.
func three(states [3]State, ready [3]bool) []Member {
	return []Member{
		mem("node1", states[0], ready[0], 0x00f),
		mem("node2", states[1], ready[1], 0x0f0),
		mem("node3", states[2], ready[2], 0xf00),
	}
}

var (
	allAlive = [3]State{StateAlive, StateAlive, StateAlive}
	allReady = [3]bool{true, true, true}
)

// servedBy counts the buckets name serves.
func servedBy(servers [MaxBuckets][]string, name string) (n int) {
	for _, s := range servers {
		if slices.Contains(s, name) {
			n++
		}
	}
	return n
}

func TestAssign(t *testing.T) {
	tests := []struct {
		name    string
		self    string
		total   uint32
		members []Member
		// want per bucket (nil entries: no server); wantMask for self.
		want     map[uint32][]string
		wantMask uint32
		// check, when set, replaces want for buckets a hash decides.
		check func(t *testing.T, servers [MaxBuckets][]string)
	}{
		{
			name: "home served", self: "node2", total: 12,
			members:  three(allAlive, allReady),
			wantMask: 0x0f0,
			want: map[uint32][]string{0: {"node1"}, 3: {"node1"}, 4: {"node2"}, 7: {"node2"}, 8: {"node3"}, 11: {"node3"},
				12: nil, 31: nil},
		},
		{
			name: "failed node's buckets spread evenly over both survivors", self: "node1", total: 12,
			members: three([3]State{StateAlive, StateDead, StateAlive}, allReady),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				if n1, n3 := servedBy(s, "node1"), servedBy(s, "node3"); n1 != 6 || n3 != 6 {
					t.Errorf("node1 serves %d buckets, node3 %d: want 6 each (its 4 home + 2 of node2's)", n1, n3)
				}
				for b := 4; b < 8; b++ {
					if len(s[b]) != 1 {
						t.Errorf("bucket %d: servers %v: want exactly one survivor", b, s[b])
					}
				}
			},
		},
		{
			name: "suspect counts as failed", self: "node3", total: 12,
			members: three([3]State{StateSuspect, StateAlive, StateAlive}, allReady),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				if servedBy(s, "node1") != 0 {
					t.Errorf("suspect node1 still serves: %v", s)
				}
				if n2, n3 := servedBy(s, "node2"), servedBy(s, "node3"); n2 != 6 || n3 != 6 {
					t.Errorf("node2 serves %d, node3 %d: want 6 each", n2, n3)
				}
			},
		},
		{
			name: "left and dead: the last survivor serves all", self: "node3", total: 12,
			members:  three([3]State{StateLeft, StateDead, StateAlive}, allReady),
			wantMask: 0xfff,
		},
		{
			name: "not ready: its home goes to the ready ones", self: "node2", total: 12,
			members: three(allAlive, [3]bool{true, false, true}),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				if servedBy(s, "node2") != 0 {
					t.Errorf("not-ready node2 serves while others are ready: %v", s)
				}
			},
			wantMask: 0,
		},
		{
			name: "cold start: nobody ready, everyone serves its home (tier 2)", self: "node1", total: 12,
			members:  three(allAlive, [3]bool{}),
			wantMask: 0x00f,
			want:     map[uint32][]string{4: {"node2"}, 8: {"node3"}},
		},
		{
			name: "cold start with a dead node: tier 2 takes its buckets", self: "node1", total: 12,
			members: three([3]State{StateAlive, StateAlive, StateDead}, [3]bool{}),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				for b := 8; b < 12; b++ {
					if len(s[b]) != 1 || s[b][0] == "node3" {
						t.Errorf("bucket %d: servers %v: want one not-ready survivor", b, s[b])
					}
				}
			},
		},
		{
			name: "incompatible member excluded", self: "node1", total: 12,
			members: func() []Member {
				m := three(allAlive, allReady)
				m[2].Compatible = false
				return m
			}(),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				if servedBy(s, "node3") != 0 {
					t.Errorf("incompatible node3 is assigned buckets: %v", s)
				}
				if n1, n2 := servedBy(s, "node1"), servedBy(s, "node2"); n1+n2 != 12 || n1 != 6 {
					t.Errorf("node1 %d, node2 %d buckets: want 6 each", n1, n2)
				}
			},
		},
		{
			name: "overlapping homes: both serve (duplicates, never losses)", self: "node2", total: 4,
			members: []Member{
				{Name: "node1", State: StateAlive, Compatible: true, Meta: Meta{Home: 0b0011, Total: 4, Ready: true}},
				{Name: "node2", State: StateAlive, Compatible: true, Meta: Meta{Home: 0b0110, Total: 4, Ready: true}},
			},
			want: map[uint32][]string{0: {"node1"}, 1: {"node1", "node2"}, 2: {"node2"}},
			check: func(t *testing.T, s [MaxBuckets][]string) {
				if len(s[3]) != 1 {
					t.Errorf("bucket 3 (nobody's home): servers %v: want one", s[3])
				}
			},
		},
		{
			name: "partition: each side serves every bucket it cannot see served", self: "node1", total: 12,
			members:  three([3]State{StateAlive, StateDead, StateDead}, allReady),
			wantMask: 0xfff,
		},
		{
			name: "partition, the other side's view", self: "node2", total: 12,
			members: three([3]State{StateDead, StateAlive, StateAlive}, allReady),
			check: func(t *testing.T, s [MaxBuckets][]string) {
				for b := 0; b < 12; b++ {
					if len(s[b]) != 1 || s[b][0] == "node1" {
						t.Errorf("bucket %d: servers %v: want exactly one of node2, node3", b, s[b])
					}
				}
			},
		},
		{
			name: "no live member at all", self: "node1", total: 12,
			members:  three([3]State{StateDead, StateDead, StateDead}, allReady),
			wantMask: 0,
			want:     map[uint32][]string{0: nil, 11: nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servers, mask := Assign(tt.self, tt.total, tt.members)
			for b, want := range tt.want {
				if !slices.Equal(servers[b], want) {
					t.Errorf("bucket %d: servers %v, want %v", b, servers[b], want)
				}
			}
			if tt.check != nil {
				tt.check(t, servers)
			}
			// Never losses: while any compatible member is alive, every
			// bucket below total has a server.
			if slices.ContainsFunc(tt.members, func(m Member) bool { return m.Compatible && m.State == StateAlive }) {
				for b := uint32(0); b < tt.total; b++ {
					if len(servers[b]) == 0 {
						t.Errorf("bucket %d has no server", b)
					}
				}
			}
			var want uint32
			for b := range servers {
				if slices.Contains(servers[b], tt.self) {
					want |= 1 << b
				}
			}
			if mask != want {
				t.Errorf("mask %#x does not match the servers (%#x)", mask, want)
			}
			if tt.check == nil && mask != tt.wantMask {
				t.Errorf("mask %#x, want %#x", mask, tt.wantMask)
			}
			for b := tt.total; b < MaxBuckets; b++ {
				if servers[b] != nil {
					t.Errorf("bucket %d >= total %d has servers %v", b, tt.total, servers[b])
				}
			}
			for b, s := range servers {
				if !slices.IsSorted(s) {
					t.Errorf("bucket %d: servers %v not sorted", b, s)
				}
			}
		})
	}
}

// TestAssignOrderIndependent shuffles the members: every order gives the
// same servers and mask, for every member as self.
func TestAssignOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, states := range [][3]State{allAlive, {StateAlive, StateDead, StateAlive}, {StateSuspect, StateAlive, StateLeft}} {
		for _, ready := range [][3]bool{allReady, {}, {true, false, false}} {
			members := three(states, ready)
			for _, self := range []string{"node1", "node2", "node3"} {
				want, wantMask := Assign(self, 12, members)
				for i := 0; i < 20; i++ {
					m := slices.Clone(members)
					r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
					got, gotMask := Assign(self, 12, m)
					if fmt.Sprint(got) != fmt.Sprint(want) || gotMask != wantMask {
						t.Fatalf("states %v ready %v self %s: order %v gives %v/%#x, want %v/%#x", states, ready, self, names(m), got, gotMask, want, wantMask)
					}
				}
			}
		}
	}
}

// TestAssignAgrees checks that the members' masks partition the buckets:
// every member computes its own mask from the same list, and together
// they cover each bucket exactly once when homes do not overlap.
func TestAssignAgrees(t *testing.T) {
	for _, states := range [][3]State{allAlive, {StateAlive, StateDead, StateAlive}, {StateDead, StateAlive, StateSuspect}} {
		members := three(states, allReady)
		var union uint32
		for _, m := range members {
			_, mask := Assign(m.Name, 12, members)
			if m.State != StateAlive && mask != 0 {
				// A failed member's own view is not what the survivors
				// see; skip it.
				continue
			}
			if union&mask != 0 {
				t.Errorf("states %v: %s's mask %#x overlaps the others' %#x", states, m.Name, mask, union)
			}
			union |= mask
		}
		if union != 0xfff {
			t.Errorf("states %v: the masks cover %#x, want 0xfff", states, union)
		}
	}
}

// TestAssignSpread: with 12 buckets and 4 nodes of 3 home buckets, each
// failure spreads the failed node's 3 buckets one per survivor; the
// rendezvous tie-break alone would not guarantee it.
func TestAssignSpread(t *testing.T) {
	var members []Member
	for i := 0; i < 4; i++ {
		members = append(members, Member{Name: fmt.Sprintf("n%d", i), State: StateAlive, Compatible: true,
			Meta: Meta{Home: 0b111 << (3 * i), Total: 12, Ready: true}})
	}
	for failed := range members {
		m := slices.Clone(members)
		m[failed].State = StateDead
		servers, _ := Assign("n0", 12, m)
		for i := range m {
			want := 4
			if i == failed {
				want = 0
			}
			if got := servedBy(servers, m[i].Name); got != want {
				t.Errorf("%s failed: %s serves %d buckets, want %d (%v)", m[failed].Name, m[i].Name, got, want, servers)
			}
		}
	}
}

func names(m []Member) []string {
	var out []string
	for _, x := range m {
		out = append(out, x.Name)
	}
	return out
}
