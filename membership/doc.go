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
//   - Tier 1 is the compatible members that are alive and ready. Suspect
//     counts as failed: a suspect member's buckets are taken over at once,
//     trading a possible short duplicate (if it was only slow) for speed.
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
// answers nothing within the probe interval is suspect, and suspect is
// already failed for Assign. Gossip runs every 50 ms, and the node reads
// memberlist's states every 50 ms (memberlist reports no event on
// suspicion). In a 3-member cluster on one host, a member that stops
// without leaving (Close, a crash) was taken over by both survivors'
// OnChange in 0.24 to 0.70 s, median 0.3 to 0.5 s (TestLiveCluster
// measures it): each survivor probes it every other interval (round robin
// over its two peers), so the first probe comes within 0 to 0.4 s; the
// probe fails after one interval (0.2 s); then gossip and the next poll.
// A member that leaves (Leave) is taken over at once (under 0.1 s).
//
// The price of these timings: a member that cannot answer for about 200
// ms (CPU starvation, a long pause, a congested management network) is
// suspected and its buckets taken over, while it may still be forwarding:
// those buckets are then forwarded twice until it refutes the suspicion
// (on its next contact, normally within a probe interval or two), when
// they go back. Every node tracks every connection, so no connection is
// lost either way. Slower timings (Config.Timing) trade detection time
// for fewer such duplicates.
//
// memberlist has no public API for a member's state (Members lists only
// live members, without theirs), so the node reads memberlist's own node
// table by reflection under its lock (states.go); Start checks that
// layout and fails with a clear error if a memberlist upgrade changed it.
//
// # Concurrency
//
// A Node is safe for concurrent use. OnChange is called from the node's
// own goroutine, serially, with no lock of this package held; it may call
// View and SetMeta, not Leave or Close (they wait for that goroutine).
package membership
