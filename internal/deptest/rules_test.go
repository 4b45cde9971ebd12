package deptest

// The table: one entry per package of the module (test files are out of
// scope: tests may import anything, e.g. gopacket as the parser's oracle,
// netns to build namespaces, the daemon to test end to end; none of it is
// linked into the binary).
//
// Two kinds of checks, and each reason says which it is:
//   - layering, on direct imports: a package imports only the module
//     packages its entry lists. Every package has an entry, so the allowed
//     graph is closed and nothing can reach upward through another package.
//   - the hot path's hygiene, on every dependency (go list -deps): what
//     runs per packet links no logging, configuration, HTTP, metrics or
//     allocating parser library, however indirectly.
//
// fmt is allowed in cluster, conntrack, dataplane and the ports: they
// build their control-path errors with it (Validate, ParseIptables,
// New/Open, snapshots), as the project's error convention asks. The
// per-packet functions are kept free of fmt by the allocation tests
// (testing.AllocsPerRun in packet, cluster, conntrack and dataplane),
// which a fmt call would fail. jhash and packet, the leaves, need no
// formatting at all and may not link it.

var (
	noSlog = rule{dep: "log/slog", trans: true,
		why: "hot path (all deps): per-packet code counts into per-worker counters and never logs; node/gateway logs what the counters show"}
	noLog = rule{dep: "log", trans: true,
		why: "hot path (all deps): no logging library on the packet path"}
	// vishvananda/netlink (used by asavie/xdp and internal/bpfutil to set
	// links up) imports log for its own parser warnings; none runs per
	// packet. Our code must still not import it.
	noLogButNetlink = rule{dep: "log", trans: true, via: []string{"github.com/vishvananda/netlink/..."},
		why: "hot path (all deps): no logging library on the packet path (vishvananda/netlink's own use, at link setup, is tolerated)"}
	noHTTP = rule{dep: "net/http", trans: true,
		why: "hot path (all deps): no server or client on the packet path; internal/daemon serves metrics and the control API"}
	noProm = rule{dep: "github.com/prometheus/...", trans: true,
		why: "hot path (all deps): counters leave as plain atomic fields; metrics turns them into Prometheus metrics at scrape time"}
	noYAML = rule{dep: "gopkg.in/yaml.v3", trans: true,
		why: "hot path (all deps): configuration arrives as plain values, converted from YAML above it"}
	noGopacket = rule{dep: "github.com/gopacket/...", trans: true,
		why: "hot path (all deps): gopacket allocates per packet; packet is our zero-allocation parser (gopacket is its test oracle and the control path's frame builder)"}
	noModuleAbove = rule{dep: m("..."), trans: true,
		except: []string{m("jhash"), m("packet"), m("cluster"), m("conntrack"), m("dataplane"), m("dataplane/xsk"), m("dataplane/afpacket"), m("internal/bpfutil")},
		why:    "hot path (all deps): nothing of the module above the hot path (config, metrics, the roles, arp, the daemon, the tools) is linked into it, however indirectly"}
	coreOwnCode = rule{dep: nonStd, trans: true, except: []string{m("..."), "golang.org/x/sys/unix"},
		why: "hot-path core (all deps): only the module's own code and x/sys/unix (poll) run per packet, all of it allocation-checked; BPF, netlink and AF_XDP libraries belong to the ports and the roles"}
	leafStdOnly = rule{dep: nonStd, trans: true,
		why: "leaf (all deps): standard library only"}
	leafNoFmt = rule{dep: "fmt", trans: true,
		why: "per-packet leaf (all deps): packet reports a Reason value and jhash cannot fail, so there is nothing to format"}

	// The roles and the control path run beside the hot path.
	rolesNoHTTP = rule{dep: "net/http", trans: true,
		why: "role (all deps): the daemon owns the HTTP listeners; a role exposes Go values"}
	rolesNoProm = rule{dep: "github.com/prometheus/...", trans: true,
		why: "role (all deps): metrics reads the role's counters; the role does not know Prometheus"}
	rolesNoYAML = rule{dep: "gopkg.in/yaml.v3", trans: true,
		why: "role (all deps): a role takes plain values; internal/daemon converts the configuration"}
)

// hotPath are the rules of every per-packet package.
var hotPath = []rule{noModuleAbove, noSlog, noHTTP, noProm, noYAML, noGopacket}

func join(rs ...[]rule) []rule {
	var out []rule
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

const (
	coreLayer = "layering (direct imports): the hot-path core imports only the core packages below it (jhash <- cluster; packet <- conntrack <- dataplane); configuration, metrics, the roles and the daemon sit above it and hand it plain values"
	portLayer = "layering (direct imports): a port implements dataplane.Port with the shared BPF helpers; it knows neither the other port nor anything above the dataplane"
	roleLayer = "layering (direct imports): a role assembles the layers below it; it never imports config (internal/daemon hands it plain values), metrics (which reads it), the daemon, the other role or the tools"
)

// The allowed imports are what a package uses plus, for the packages
// above the core, the downward leaves it may reasonably need (jhash,
// packet, internal/bpfutil): a permission, not a dependency.
var table = map[string]entry{
	// Hot path: the core.
	"jhash":     {layer: coreLayer, forbid: join(hotPath, []rule{noLog, leafStdOnly, leafNoFmt})},
	"packet":    {layer: coreLayer, forbid: join(hotPath, []rule{noLog, leafStdOnly, leafNoFmt})},
	"cluster":   {imports: []string{"jhash"}, layer: coreLayer, forbid: join(hotPath, []rule{noLog, coreOwnCode})},
	"conntrack": {imports: []string{"packet"}, layer: coreLayer, forbid: join(hotPath, []rule{noLog, coreOwnCode})},
	"dataplane": {imports: []string{"packet", "conntrack", "cluster"}, layer: coreLayer, forbid: join(hotPath, []rule{noLog, coreOwnCode})},

	// Hot path: the ports.
	"dataplane/xsk":      {imports: []string{"cluster", "conntrack", "dataplane", "internal/bpfutil", "jhash", "packet"}, layer: portLayer, forbid: join(hotPath, []rule{noLogButNetlink})},
	"dataplane/afpacket": {imports: []string{"dataplane", "internal/bpfutil"}, layer: portLayer, forbid: join(hotPath, []rule{noLogButNetlink})},

	// Shared kernel helpers and the control path.
	"internal/bpfutil": {layer: "layering (direct imports): a leaf shared by the ports, the roles, arp and bench; importing any of them would bring back the backward arrow (arp -> dataplane) it exists to avoid",
		forbid: []rule{{dep: "log/slog", why: "direct import: it returns errors; its callers log"}}},
	"arp": {imports: []string{"packet", "internal/bpfutil"}, layer: "layering (direct imports): the neighbour responder serves both roles; it knows neither of them, nor the dataplane, config or the daemon",
		forbid: []rule{{dep: "github.com/prometheus/...", why: "direct import: its counters are plain Stats; metrics exports them"}}},

	// The plain description of a node's data interfaces, shared by config
	// and both roles.
	"node": {layer: "layering (direct imports): plain types (a data interface and its validation) that config builds and both roles take; it imports nothing of the module",
		forbid: []rule{{dep: nonStd, why: "direct import: standard library only, so config and the roles can share it without pulling anything in"}}},

	// The roles, beside the daemon.
	"node/gateway": {imports: []string{"arp", "cluster", "conntrack", "dataplane", "dataplane/afpacket", "dataplane/xsk", "internal/bpfutil", "jhash", "node", "packet"}, layer: roleLayer,
		forbid: []rule{rolesNoHTTP, rolesNoProm, rolesNoYAML}},
	"node/backend": {imports: []string{"arp", "cluster", "jhash", "internal/bpfutil", "node", "packet"}, layer: roleLayer,
		forbid: []rule{rolesNoHTTP, rolesNoProm, rolesNoYAML}},

	// Configuration, metrics, the daemon.
	"config": {imports: []string{"cluster", "conntrack", "dataplane", "dataplane/afpacket", "dataplane/xsk", "internal/bpfutil", "node"}, layer: "layering (direct imports): config is the YAML boundary; it converts the file once into the values the roles take, validating (and sizing) each with the rules of the package that owns it (cluster, conntrack, dataplane, dataplane/afpacket, dataplane/xsk, internal/bpfutil, node) and naming the YAML key; it never imports the roles, the daemon or metrics",
		forbid: []rule{{dep: "log/slog", why: "direct import: config returns errors naming the key; the CLI and the daemon log them"}}},
	"metrics": {imports: []string{"cluster", "conntrack", "dataplane", "dataplane/xsk", "node", "node/backend", "node/gateway", "packet"},
		layer:  "layering (direct imports): metrics only reads the roles' and the hot path's counters at scrape time; it never imports config, the daemon or the tools (the daemon registers it)",
		forbid: []rule{{dep: "net/http", why: "direct import: internal/daemon owns the HTTP listener; metrics builds collectors"}}},
	"internal/daemon": {imports: []string{"cluster", "config", "conntrack", "dataplane", "dataplane/afpacket", "dataplane/xsk", "internal/bpfutil", "membership", "metrics", "node", "node/backend", "node/gateway", "packet", "resync"},
		layer: "layering (direct imports): the daemon runs one node from the configuration (config, the roles, metrics); it never imports the CLI, the tools or test helpers"},

	// State transfer between nodes.
	"resync": {imports: []string{"conntrack"}, layer: "layering (direct imports): the state transfer's channel and protocol; it takes the table's Export and Merge as functions and imports conntrack only for its parameters' type, never the roles, config, metrics or the daemon",
		forbid: []rule{{dep: nonStd, except: []string{m("conntrack")}, why: "direct import: standard library only (its cryptography included); the daemon wires it to the table, the membership and the metrics"}}},
	// Cluster membership, beside the roles: the daemon hands it plain
	// values and applies the masks it computes.
	"membership": {layer: "layering (direct imports): gossip membership and the bucket assignment take plain values (names, masks, the cluster parameters); they never import config, the dataplane, the roles or the daemon (the daemon wires them together)",
		forbid: []rule{{dep: "net/http", trans: true, via: []string{"github.com/hashicorp/go-metrics/...", "net/rpc"},
			why: "membership (all deps): the daemon owns the HTTP listeners (memberlist's go-metrics, for its own sinks, and go-msgpack, through net/rpc, link net/http; neither serves anything here)"},
			rolesNoProm, rolesNoYAML}},

	// Tools and the command.
	"simulate": {imports: []string{"packet", "conntrack", "cluster", "jhash"},
		layer: "layering (direct imports): simulate replays captures through the decision code itself (packet, conntrack, cluster), without sockets, the dataplane or the daemon"},
	"cmd/xdpcluster": {imports: []string{"cluster", "config", "dataplane", "internal/daemon", "internal/netns", "jhash", "node", "packet", "simulate"},
		layer: "layering (direct imports): the command sits on top; it does not import the benchmark harness or test helpers (nstest, deptest)"},
	"bench": {imports: []string{"internal/bpfutil", "internal/netns"},
		layer: "layering (direct imports): the harnesses' parts (traffic generators, the helpers their mains share) need only the BPF helpers and the namespaces"},
	"bench/e2e": {imports: []string{"bench", "cluster", "dataplane", "dataplane/afpacket", "dataplane/xsk", "internal/bpfutil", "internal/netns", "node", "node/gateway", "packet"},
		layer: "layering (direct imports): the end-to-end harness drives the gateway role directly; it never imports the daemon, the command or test helpers"},
	"bench/tcp": {imports: []string{"bench", "cluster", "dataplane", "dataplane/xsk", "internal/bpfutil", "internal/netns", "node", "node/gateway"},
		layer: "layering (direct imports): the real-traffic harness drives the gateway role directly and iperf3; it never imports the daemon, the command or test helpers"},
	"bench/summary": {layer: "layering (direct imports): reads `go test -bench` output; imports nothing of the module",
		forbid: []rule{{dep: nonStd, why: "direct import: standard library only"}}},

	// Test support.
	"internal/netns": {layer: "layering (direct imports): namespace helpers for tests, bench/e2e, bench/tcp and the demo (cmd); it imports nothing of the module, and only those import it"},
	"internal/netns/nstest": {imports: []string{"internal/netns"},
		layer: "layering (direct imports): test helper over internal/netns; only test files import it"},
	"internal/daemon/daemontest": {imports: []string{"config", "internal/daemon", "internal/netns"},
		layer: "layering (direct imports): test helper that starts a daemon in-process; only test files import it"},
	"internal/deptest": {layer: "layering (direct imports): this test; it has no code of its own"},
	"packaging":        {layer: "layering (direct imports): the tests of what ships (make install, the .deb, the README's quickstart with the installed package); no code of its own"},
}

// globals apply to every package but the exempt ones.
var globals = []global{
	{rule: rule{dep: "testing", trans: true,
		why: "production code (all deps): the testing package stays out of the binary; only test helpers link it"},
		exempt: []string{"internal/netns/nstest", "internal/daemon/daemontest"}},
}

// tolerated are today's known departures from the intended layering.
var tolerated = []tolerance{}
