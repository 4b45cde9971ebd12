// Package membership is the cluster's self-management: which nodes are
// members, whether each is alive and ready, and from that, on every node
// alike, which node serves each bucket. It runs hashicorp/memberlist
// (SWIM gossip, v0.7.0) on a management address, encrypted and verified
// both ways with the cluster secret (AES-GCM; a member with another key
// cannot join), and gossips each member's Meta: its home buckets (its
// configured local_nodemask), the cluster parameters (total_nodes, seed,
// hash mode), whether it is ready and where its state-resync server
// listens.
//
// # Assignment
//
// Assign is pure and deterministic: the same members, in any order, give
// the same assignment on every node, so there is no coordinator and no
// vote.
//
//   - Only compatible members count: those whose Total, Seed and Hash equal
//     this node's (an incompatible member is logged once, as an error).
//   - Tier 1 is the compatible members that are alive and ready (a
//     member memberlist suspects but has not declared dead still counts).
//   - Each bucket b < total is served by the tier-1 members whose Home has
//     b. A bucket nobody in tier 1 calls home goes to exactly one tier-1
//     member: the least loaded (buckets served so far, homes first, then
//     orphans in bucket order), ties broken by the highest rendezvous
//     weight of (bucket, name) (FNV-1a 64 of name, 0, bucket, finalized).
//     So a failed node's buckets spread over all survivors: with
//     total_nodes 12 and 4-bucket homes on 3 nodes, each survivor takes 2.
//   - If tier 1 is empty (cold start, or everyone resyncing), the same rule
//     applies to tier 2: every alive compatible member, ready or not. A
//     resyncing node serves rather than nobody: duplicates, never losses.
//   - The mask of a node is the buckets whose servers include it.
//
// Members of a partition see the others dead, so each side serves every
// bucket it cannot see served: during a partition some buckets are
// forwarded by both sides (duplicates), none by neither (no losses).
//
// # Failure detection and its trade-off
//
// DefaultTiming probes every 200 ms (ProbeInterval) with an 80 ms direct
// timeout before indirect probes through other members; a member that
// answers none is suspected, and declared dead after the suspicion
// timeout, SuspicionMult (2) × ProbeInterval with up to ten members
// (memberlist scales it by log10 of the member count above that), then
// taken over. Gossip runs every 50 ms. In a 3-member cluster, a member
// that stops without leaving (Close, a crash) was taken over by both
// survivors' OnChange in 0.74 to 0.95 s, median 0.75 s
// (TestLiveCluster measures it); with SuspicionMult 3 it took 0.95 to
// 1.35 s, which can miss TCP's retransmission at 1.4 s and wait for the
// next at 3 s. A member that leaves (Leave) is taken over at once (about
// 0.2 s: its last meta says it is leaving, and it is not ready).
//
// The price of these timings: a member that cannot answer for about half a
// second (CPU starvation, a long pause, a congested management network) is
// declared dead and its buckets taken over, while it may still be
// forwarding: those buckets are then forwarded twice until it refutes (it
// learns of its own death on its next contact and announces itself alive
// again), when they go back. Every node tracks every connection, so no connection is
// lost either way. Slower timings (Config.Timing) trade detection time
// for fewer such duplicates.
//
// The node keeps its own record of the members from memberlist's public
// events (states.go): memberlist does not report suspicion publicly, so a
// member is taken over when it is declared dead, after the probe that
// failed and the suspicion timeout (SuspicionMult × ProbeInterval with
// three members, shortened as other members confirm the suspicion). A
// graceful Leave is reported at once.
//
// # Concurrency
//
// A Node is safe for concurrent use. OnChange is called from the node's
// own goroutine, serially, with no lock of this package held; it may call
// View and SetMeta, not Leave or Close (they wait for that goroutine).
package membership
