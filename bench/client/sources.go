package client

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Sources spreads connections over several loopback source addresses. One
// (source IP, destination IP, destination port) tuple has only as many
// connections as the ephemeral port range (about 28k on Linux), so past
// that a single-source bench cannot open more connections to one engine;
// every 127.0.0.x is a separate source on Linux loopback.
type Sources struct {
	ips []net.IP
}

// maxSources is how many 127.0.0.x addresses Sources will use (.1 to .250).
const maxSources = 250

// PortsPerSource is how many connections one source address may carry to a
// single destination: the ephemeral port range minus a margin for the rest
// of the machine. It reads /proc/sys/net/ipv4/ip_local_port_range and falls
// back to Linux's default range when that is unreadable.
func PortsPerSource() int {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && h > l {
				lo, hi = l, h
			}
		}
	}
	n := hi - lo + 1
	return max(n-n/10, 1) // keep 10% for everything else on the machine
}

// NewSources decides the source addresses for conns connections to target
// (host:port). forced > 0 asks for exactly that many addresses; otherwise
// one address is used while conns fits in perSource ports, and
// ceil(conns/perSource) addresses beyond. Spreading needs a loopback
// target; for any other target more connections than perSource is an
// error, since they could not all be opened.
func NewSources(target string, conns, perSource, forced int) (*Sources, error) {
	if perSource <= 0 {
		perSource = PortsPerSource()
	}
	n := forced
	if n <= 0 {
		if conns <= perSource {
			return &Sources{}, nil
		}
		n = (conns + perSource - 1) / perSource
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("source addresses for %q: %w", target, err)
	}
	ip := net.ParseIP(host)
	if host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%d connections need %d source addresses, which only works for a 127.0.0.x target (got %s): lower --conns to %d or run several bench processes", conns, n, host, perSource)
	}
	if n > maxSources {
		return nil, fmt.Errorf("%d connections need %d source addresses, more than the %d this bench uses", conns, n, maxSources)
	}
	s := &Sources{}
	for i := range n {
		s.ips = append(s.ips, net.IPv4(127, 0, 0, byte(1+i)))
	}
	return s, nil
}

// Count is the number of source addresses in use (0: the kernel chooses).
func (s *Sources) Count() int { return len(s.ips) }

// For is the source address of connection i (nil: the kernel chooses).
func (s *Sources) For(i int) net.IP {
	if s == nil || len(s.ips) == 0 {
		return nil
	}
	return s.ips[i%len(s.ips)]
}

// String lists the addresses for logs and results.
func (s *Sources) String() string {
	if s == nil || len(s.ips) == 0 {
		return "default"
	}
	if len(s.ips) == 1 {
		return s.ips[0].String()
	}
	return fmt.Sprintf("%s..%s (%d addresses)", s.ips[0], s.ips[len(s.ips)-1], len(s.ips))
}
