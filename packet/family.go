package packet

// Family is an IP address family, numbered by the IP version (so the
// values match the version nibble; String, generated, says "ipv4" or "ipv6"): IPv4 or IPv6; 0 when not set.
type Family uint8

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Family -linecomment -output=family_string.go

// Address families.
const (
	IPv4 Family = 4 // ipv4
	IPv6 Family = 6 // ipv6
)
