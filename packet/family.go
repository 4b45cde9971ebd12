package packet

// Family is an IP address family, numbered by the IP version (so the
// values match the version nibble): IPv4 or IPv6; 0 when not set.
type Family uint8

// Address families.
const (
	IPv4 Family = 4 // ipv4
	IPv6 Family = 6 // ipv6
)
