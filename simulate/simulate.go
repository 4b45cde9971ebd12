// Package simulate replays a packet capture through the real decision path
// (packet.Decode, conntrack, cluster.Match) for every node of a cluster at
// once, and reports each node's share of connections, packets and bytes,
// the imbalance, the sources that drive it, what no node would own and
// why, the shares after a failover, and seeds that balance better.
//
// It streams: memory is bounded by the connection tracker's limit and by
// Options.MaxSources, never by the capture's size (at most MaxRecord bytes
// of a record are read; see capture.go for the formats and link types). Run is not safe for
// concurrent use of one Options.Progress callback.
package simulate

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/xdpcluster/xdpcluster/cluster"
	"github.com/xdpcluster/xdpcluster/conntrack"
	"github.com/xdpcluster/xdpcluster/packet"
)

// Takeover says that node Failed is down and node By serves its share (by
// adding Failed's bit to its node mask). Nodes are 1-based.
type Takeover struct{ Failed, By int }

// ParseTakeovers reads "2:1" or "2:1,3:1" (failed:by pairs).
func ParseTakeovers(s string) ([]Takeover, error) {
	var out []Takeover
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f, b, ok := strings.Cut(part, ":")
		fn, err1 := strconv.Atoi(strings.TrimSpace(f))
		bn, err2 := strconv.Atoi(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("takeover %q: want FAILED:BY, e.g. 2:1 (node 2 failed, node 1 takes its share)", part)
		}
		out = append(out, Takeover{fn, bn})
	}
	return out, nil
}

// Options configure Run.
type Options struct {
	TotalNodes uint32
	Seed       uint32
	Hash       cluster.HashMode
	Takeovers  []Takeover
	// SeedSearch, if positive, tries that many seeds (the configured one
	// first, then pseudo-random ones from SearchRand) and reports the best.
	SeedSearch int
	SearchRand uint64
	// Top is how many top sources to report (default 10).
	Top int
	// MaxEntries bounds the connection tracker (default 1,048,576).
	MaxEntries int
	// TCPLoose replays with loose TCP pickup, to show its effect.
	TCPLoose bool
	// MaxSources bounds the per-source table behind the top sources and
	// the seed search (default 1,048,576); sources beyond it are counted
	// as unsampled.
	MaxSources int
	// Progress, if set, is called about every 64K frames and at the end.
	Progress func(frames uint64, offset int64)
}

// Validate checks the options, naming the field.
func (o *Options) Validate() error {
	m := cluster.LocalNode(o.TotalNodes, 1, o.Seed)
	m.Hash = o.Hash
	if err := m.Validate(); err != nil {
		return err
	}
	failed := map[int]bool{}
	for _, t := range o.Takeovers {
		if t.Failed < 1 || t.Failed > int(o.TotalNodes) || t.By < 1 || t.By > int(o.TotalNodes) {
			return fmt.Errorf("takeover %d:%d: nodes must be 1..%d", t.Failed, t.By, o.TotalNodes)
		}
		if t.Failed == t.By {
			return fmt.Errorf("takeover %d:%d: a node cannot take over its own share", t.Failed, t.By)
		}
		if failed[t.Failed] {
			return fmt.Errorf("takeover %d:%d: node %d is taken over twice", t.Failed, t.By, t.Failed)
		}
		failed[t.Failed] = true
	}
	for _, t := range o.Takeovers {
		if failed[t.By] {
			return fmt.Errorf("takeover %d:%d: node %d has failed itself and cannot take over", t.Failed, t.By, t.By)
		}
	}
	if o.SeedSearch < 0 || o.Top < 0 || o.MaxEntries < 0 || o.MaxSources < 0 {
		return errors.New("seed-search, top, max-entries and max-sources must not be negative")
	}
	return nil
}

// NodeShare is one node's part of the traffic.
type NodeShare struct {
	Node        int     `json:"node"`
	Failed      bool    `json:"failed,omitempty"`
	Buckets     []int   `json:"buckets"` // the hash buckets (1-based node numbers) it serves
	Connections uint64  `json:"connections"`
	Packets     uint64  `json:"packets"`
	Bytes       uint64  `json:"bytes"`
	ConnShare   float64 `json:"connection_share"`
	PacketShare float64 `json:"packet_share"`
	ByteShare   float64 `json:"byte_share"`
}

// Imbalance is max ÷ mean over the nodes that serve traffic (1 is perfect).
type Imbalance struct {
	Connections float64 `json:"connections"`
	Packets     float64 `json:"packets"`
	Bytes       float64 `json:"bytes"`
}

// Ownership counts tracked packets by how many nodes own them.
type Ownership struct {
	ExactlyOne uint64 `json:"exactly_one"`
	None       uint64 `json:"none"`
	Several    uint64 `json:"several"`
}

// Scenario is the cluster's split under one set of node masks.
type Scenario struct {
	Name      string      `json:"name"`
	Nodes     []NodeShare `json:"nodes"`
	Imbalance Imbalance   `json:"imbalance"`
	Ownership Ownership   `json:"ownership"`
}

// Source is a heavy source address or prefix (by original source: the hash
// input), with the node that owns it.
type Source struct {
	Source      string  `json:"source"`
	Node        int     `json:"node"`
	Connections uint64  `json:"connections"`
	Packets     uint64  `json:"packets"`
	Bytes       uint64  `json:"bytes"`
	ShareOfNode float64 `json:"share_of_node_bytes"`
}

// SeedResult is one candidate of the seed search.
type SeedResult struct {
	Seed      uint32    `json:"seed"`
	Imbalance Imbalance `json:"imbalance"`
	Rule      string    `json:"iptables"`
}

// Report is the outcome of Run.
type Report struct {
	Format     string    `json:"format"`
	LinkTypes  []string  `json:"link_types"`
	Frames     uint64    `json:"frames"`
	Bytes      uint64    `json:"bytes"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	TotalNodes uint32    `json:"total_nodes"`
	Seed       uint32    `json:"seed"`
	Hash       string    `json:"hash"`

	NotIP uint64 `json:"not_ip"`
	// Malformed counts frames that could not be parsed, by parser reason,
	// and frames that cannot be decoded at all: unsupported_link_type_N
	// (N the link type number), truncated_link_header, and no_such_interface
	// (a pcapng packet for an interface its section does not describe).
	Malformed map[string]uint64 `json:"malformed"`
	// PayloadNotCaptured counts frames the capture cut after their headers
	// (a short snap length, e.g. tcpdump -s 96): they were decoded from
	// their headers, with lengths from the IP header; bytes are the lengths
	// on the wire.
	PayloadNotCaptured uint64 `json:"payload_not_captured"`
	// HeadersNotCaptured counts frames the capture cut inside their
	// headers; they are also counted as malformed (truncated_*).
	HeadersNotCaptured uint64 `json:"headers_not_captured"`
	// LongRecords counts records longer than MaxRecord bytes: only their
	// first MaxRecord bytes were read, the rest skipped.
	LongRecords uint64 `json:"long_records"`
	// Unowned counts packets that no node owns, by reason: INVALID
	// packets by conntrack reason, "untracked" for ND/MLD.
	Unowned     map[string]uint64 `json:"unowned"`
	Tracked     uint64            `json:"tracked_packets"`
	Connections uint64            `json:"connections"`
	Conntrack   conntrack.Stats   `json:"conntrack"`

	Normal   Scenario  `json:"normal"`
	Failover *Scenario `json:"failover,omitempty"`

	TopSources  []Source `json:"top_sources"`
	TopPrefixes []Source `json:"top_prefixes"` // IPv4 /24, IPv6 /32
	// UnsampledBytes are bytes of sources beyond MaxSources, missing from
	// the top lists and the seed search.
	UnsampledBytes uint64       `json:"unsampled_bytes"`
	Seeds          []SeedResult `json:"seed_search,omitempty"`

	// Warning is set when the capture ended early (truncated or corrupt).
	Warning string `json:"warning,omitempty"`
}

// CaptureError is a truncated or corrupt capture: where reading stopped.
type CaptureError struct {
	Frame  uint64 // 1-based number of the frame that could not be read
	Offset int64  // byte offset where that frame's record starts (in the uncompressed stream)
	Err    error
}

func (e *CaptureError) Error() string {
	return fmt.Sprintf("frame %d at byte offset %d: %v", e.Frame, e.Offset, e.Err)
}

func (e *CaptureError) Unwrap() error { return e.Err }

type counts struct{ conns, pkts, bytes uint64 }

// srcKey is an original source as the hash sees it: family and address.
type srcKey struct {
	fam  packet.Family
	addr [16]byte
}

// emptyReader is a capture with no records (a zero-byte file).
type emptyReader struct{}

func (emptyReader) next(*record) error { return io.EOF }
func (emptyReader) offset() int64      { return 0 }

// Run replays the capture in r. On a truncated or corrupt capture it
// returns the report of what was read (with Warning set) and a
// *CaptureError.
func Run(r io.Reader, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Top == 0 {
		opts.Top = 10
	}
	if opts.MaxSources == 0 {
		opts.MaxSources = 1 << 20
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReaderSize(gz, 1<<20)
	}

	rep := &Report{TotalNodes: opts.TotalNodes, Seed: opts.Seed, Hash: opts.Hash.String(),
		Malformed: map[string]uint64{}, Unowned: map[string]uint64{}}
	var src recordReader
	magic, err := br.Peek(4)
	switch {
	case len(magic) == 0 && err == io.EOF:
		rep.Format = "empty"
		src = emptyReader{}
	case err != nil:
		return nil, fmt.Errorf("read capture header: %w", err)
	case binary.LittleEndian.Uint32(magic) == ngSHB:
		rep.Format = "pcapng"
		src = newNgReader(br)
	default:
		pr, err := newPcapReader(br)
		if err != nil {
			return nil, fmt.Errorf("not a pcap or pcapng capture: %w", err)
		}
		rep.Format = "pcap"
		src = pr
	}
	var buckets [cluster.MaxNodes]counts
	match := cluster.LocalNode(opts.TotalNodes, 1, opts.Seed)
	match.Hash = opts.Hash
	sources := make(map[srcKey]*counts)
	// tag runs once per new connection: count it for its bucket and source.
	tag := func(fam packet.Family, orig [16]byte) uint8 {
		var b uint32
		if fam == packet.IPv4 {
			b = match.Bucket4((*[4]byte)(orig[:4]))
		} else {
			b = match.Bucket16(&orig)
		}
		buckets[b].conns++
		k := srcKey{fam: fam, addr: orig}
		if c := sources[k]; c != nil {
			c.conns++
		} else if len(sources) < opts.MaxSources {
			sources[k] = &counts{conns: 1}
		}
		return uint8(b)
	}
	tb, err := conntrack.NewTable(conntrack.Config{MaxEntries: opts.MaxEntries, TCPLoose: opts.TCPLoose, Tag: tag})
	if err != nil {
		return nil, err
	}
	seenLinks := map[layers.LinkType]bool{}
	var (
		p      packet.Parsed
		rec    record
		eth    = make([]byte, 0, MaxRecord+64)
		capErr error
	)
	for {
		off := src.offset()
		err := src.next(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			capErr = &CaptureError{Frame: rep.Frames + 1, Offset: off, Err: err}
			break
		}
		rep.Frames++
		wire := uint64(rec.wireLen)
		rep.Bytes += wire
		if !rec.noIface { // else its timestamp's units are unknown
			if rep.First.IsZero() {
				rep.First = rec.ts
			}
			rep.Last = rec.ts
		}
		if opts.Progress != nil && rep.Frames&0xffff == 0 {
			opts.Progress(rep.Frames, src.offset())
		}
		if rec.capLen > MaxRecord {
			rep.LongRecords++
		}
		if rec.noIface {
			rep.Malformed["no_such_interface"]++
			continue
		}
		if !seenLinks[rec.link] {
			seenLinks[rec.link] = true
			rep.LinkTypes = append(rep.LinkTypes, rec.link.String())
		}
		frame, delta, lr := toEthernet(rec.link, rec.data, &eth)
		switch lr {
		case linkUnsupported:
			rep.Malformed["unsupported_link_type_"+strconv.Itoa(int(rec.link))]++
			continue
		case linkTruncated:
			rep.Malformed["truncated_link_header"]++
			continue
		case linkNotIP:
			rep.NotIP++
			continue
		}
		switch r := p.DecodeCaptured(frame, int(rec.wireLen)+delta); r {
		case packet.OK:
			if p.Cut {
				rep.PayloadNotCaptured++
			}
		case packet.NotIP:
			rep.NotIP++
			continue
		default:
			rep.Malformed[r.String()]++
			if int64(len(rec.data)) < rec.wireLen && strings.HasPrefix(r.String(), "truncated_") {
				rep.HeadersNotCaptured++
			}
			continue
		}
		res := tb.Track(&p, rec.ts.UnixNano())
		switch res.State {
		case conntrack.Invalid:
			rep.Unowned[res.Reason.String()]++
			continue
		case conntrack.Untracked:
			rep.Unowned["untracked"]++
			continue
		}
		rep.Tracked++
		b := &buckets[res.Tag]
		b.pkts++
		b.bytes += wire
		if c := sources[srcKey{fam: res.Family, addr: res.Orig}]; c != nil {
			c.pkts++
			c.bytes += wire
		} else {
			rep.UnsampledBytes += wire
		}
	}
	if opts.Progress != nil {
		opts.Progress(rep.Frames, src.offset())
	}
	rep.Conntrack = tb.Stats()
	rep.Connections = rep.Conntrack.Inserts
	n := int(opts.TotalNodes)
	// Options.Validate (above) checked every node number: NodeMask cannot
	// fail here.
	masks := make([]uint32, n)
	for i := range masks {
		masks[i], _ = cluster.NodeMask(uint64(i+1), uint64(n))
	}
	rep.Normal = scenario("normal", n, opts.Seed, masks, nil, buckets[:n])
	if len(opts.Takeovers) > 0 {
		fm := append([]uint32(nil), masks...)
		failed := map[int]bool{}
		var names []string
		for _, t := range opts.Takeovers {
			m, _ := cluster.NodeMask(uint64(t.Failed), uint64(n))
			fm[t.By-1] |= m
			failed[t.Failed] = true
			names = append(names, fmt.Sprintf("node %d failed, node %d takes its share", t.Failed, t.By))
		}
		for f := range failed {
			fm[f-1] = 0
		}
		s := scenario(strings.Join(names, "; "), n, opts.Seed, fm, failed, buckets[:n])
		rep.Failover = &s
	}
	rep.TopSources, rep.TopPrefixes = topSources(sources, &match, &rep.Normal, opts.Top)
	if opts.SeedSearch > 0 {
		rep.Seeds = seedSearch(sources, opts)
	}
	if capErr != nil {
		rep.Warning = fmt.Sprintf("the capture ended early (%v); the results cover the %d frames before it", capErr, rep.Frames)
		return rep, capErr
	}
	return rep, nil
}

func imbalance(vals []uint64) float64 {
	if len(vals) == 0 {
		return 0
	}
	var sum, max uint64
	for _, v := range vals {
		sum += v
		if v > max {
			max = v
		}
	}
	if sum == 0 {
		return 0
	}
	return float64(max) / (float64(sum) / float64(len(vals)))
}

func share(v, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return float64(v) / float64(total)
}

// scenario splits the per-bucket counts among nodes with the given masks,
// checking ownership with each node's own cluster.Match.
func scenario(name string, n int, seed uint32, masks []uint32, failed map[int]bool, b []counts) Scenario {
	s := Scenario{Name: name}
	var total counts
	for _, c := range b {
		total.conns += c.conns
		total.pkts += c.pkts
		total.bytes += c.bytes
	}
	for bucket := 0; bucket < n; bucket++ {
		owners := 0
		for node := 0; node < n; node++ {
			m := cluster.Match{TotalNodes: uint32(n), NodeMask: masks[node], Seed: seed}
			if masks[node] != 0 && m.OwnsNode(bucket) {
				owners++
			}
		}
		switch owners {
		case 0:
			s.Ownership.None += b[bucket].pkts
		case 1:
			s.Ownership.ExactlyOne += b[bucket].pkts
		default:
			s.Ownership.Several += b[bucket].pkts
		}
	}
	var conns, pkts, bytes []uint64
	for node := 0; node < n; node++ {
		ns := NodeShare{Node: node + 1, Failed: failed[node+1]}
		for bucket := 0; bucket < n; bucket++ {
			if masks[node]>>bucket&1 == 1 {
				ns.Buckets = append(ns.Buckets, bucket+1)
				ns.Connections += b[bucket].conns
				ns.Packets += b[bucket].pkts
				ns.Bytes += b[bucket].bytes
			}
		}
		ns.ConnShare, ns.PacketShare, ns.ByteShare = share(ns.Connections, total.conns), share(ns.Packets, total.pkts), share(ns.Bytes, total.bytes)
		s.Nodes = append(s.Nodes, ns)
		if !ns.Failed {
			conns, pkts, bytes = append(conns, ns.Connections), append(pkts, ns.Packets), append(bytes, ns.Bytes)
		}
	}
	s.Imbalance = Imbalance{imbalance(conns), imbalance(pkts), imbalance(bytes)}
	return s
}

func addrString(k srcKey) string {
	if k.fam == packet.IPv4 {
		return netip.AddrFrom4([4]byte(k.addr[:4])).String()
	}
	return netip.AddrFrom16(k.addr).String()
}

// topSources returns the heaviest sources and prefixes (IPv4 /24, IPv6
// /32: in xt_cluster mode a whole IPv6 /32 lands on one node) by bytes.
func topSources(sources map[srcKey]*counts, m *cluster.Match, normal *Scenario, top int) ([]Source, []Source) {
	nodeBytes := func(node int) uint64 { return normal.Nodes[node-1].Bytes }
	nodeOf := func(k srcKey) int {
		if k.fam == packet.IPv4 {
			return int(m.Bucket4((*[4]byte)(k.addr[:4]))) + 1
		}
		return int(m.Bucket16(&k.addr)) + 1
	}
	var srcs []Source
	prefixes := map[string]*Source{}
	for k, c := range sources {
		node := nodeOf(k)
		srcs = append(srcs, Source{Source: addrString(k), Node: node, Connections: c.conns, Packets: c.pkts, Bytes: c.bytes})
		var pk srcKey
		var name string
		pk.fam = k.fam
		if k.fam == packet.IPv4 {
			copy(pk.addr[:3], k.addr[:3])
			name = addrString(pk) + "/24"
		} else {
			copy(pk.addr[:4], k.addr[:4])
			name = addrString(pk) + "/32"
		}
		ps := prefixes[name]
		if ps == nil {
			// A /24 may straddle nodes; a /32 of IPv6 never does in
			// xt_cluster mode. Name the node of the prefix's first source.
			ps = &Source{Source: name, Node: node}
			prefixes[name] = ps
		} else if ps.Node != node {
			ps.Node = 0 // several nodes
		}
		ps.Connections += c.conns
		ps.Packets += c.pkts
		ps.Bytes += c.bytes
	}
	var pfx []Source
	for _, p := range prefixes {
		pfx = append(pfx, *p)
	}
	sortTrim := func(s []Source) []Source {
		sort.Slice(s, func(i, j int) bool {
			if s[i].Bytes != s[j].Bytes {
				return s[i].Bytes > s[j].Bytes
			}
			return s[i].Source < s[j].Source
		})
		if len(s) > top {
			s = s[:top]
		}
		for i := range s {
			if s[i].Node > 0 {
				s[i].ShareOfNode = share(s[i].Bytes, nodeBytes(s[i].Node))
			}
		}
		return s
	}
	return sortTrim(srcs), sortTrim(pfx)
}

// seedSearch evaluates candidate seeds over the per-source table and
// returns the best five by byte imbalance (then packets, connections).
func seedSearch(sources map[srcKey]*counts, opts Options) []SeedResult {
	type wsrc struct {
		k srcKey
		c counts
	}
	ws := make([]wsrc, 0, len(sources))
	for k, c := range sources {
		ws = append(ws, wsrc{k, *c})
	}
	r := rand.New(rand.NewPCG(opts.SearchRand, 0x5eed))
	n := int(opts.TotalNodes)
	var res []SeedResult
	for i := 0; i < opts.SeedSearch; i++ {
		seed := opts.Seed
		if i > 0 {
			seed = r.Uint32()
		}
		m := cluster.LocalNode(opts.TotalNodes, 1, seed)
		m.Hash = opts.Hash
		conns, pkts, bytes := make([]uint64, n), make([]uint64, n), make([]uint64, n)
		for j := range ws {
			w := &ws[j]
			var b uint32
			if w.k.fam == packet.IPv4 {
				b = m.Bucket4((*[4]byte)(w.k.addr[:4]))
			} else {
				b = m.Bucket16(&w.k.addr)
			}
			conns[b] += w.c.conns
			pkts[b] += w.c.pkts
			bytes[b] += w.c.bytes
		}
		res = append(res, SeedResult{Seed: seed, Imbalance: Imbalance{imbalance(conns), imbalance(pkts), imbalance(bytes)}, Rule: m.String()})
	}
	sort.SliceStable(res, func(i, j int) bool {
		a, b := res[i].Imbalance, res[j].Imbalance
		if math.Abs(a.Bytes-b.Bytes) > 1e-9 {
			return a.Bytes < b.Bytes
		}
		if math.Abs(a.Packets-b.Packets) > 1e-9 {
			return a.Packets < b.Packets
		}
		return a.Connections < b.Connections
	})
	if len(res) > 5 {
		res = res[:5]
	}
	return res
}
