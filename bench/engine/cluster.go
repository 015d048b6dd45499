package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Cluster is several engine processes started from one command template:
// the nodes of a Charla cluster (docs/CLUSTER.md) on this machine. Each
// node is a Process, started, pinned, logged and stopped exactly as the
// single engine of --engine-cmd is.
type Cluster struct {
	// Nodes are the processes, node i+1 at index i.
	Nodes []*Process
	// Addrs are their listen addresses, Cmds their expanded command lines
	// (before pinning).
	Addrs, Cmds []string
	// Name is the cluster name the template's {name} became ("" if the
	// template has none).
	Name string
}

// Placeholders of a cluster command template.
const (
	PlaceNode = "{i}"    // node number, from 1
	PlaceAddr = "{addr}" // the node's host:port
	PlacePort = "{port}" // the node's port
	PlaceName = "{name}" // a cluster name unique to the run
)

// Expand fills one node's command line from template: {i} is the node
// number (from 1), {addr} and {port} its listen address, {name} the
// cluster name.
func Expand(template string, node int, addr, name string) string {
	_, port, _ := net.SplitHostPort(addr)
	return strings.NewReplacer(PlaceNode, strconv.Itoa(node), PlaceAddr, addr, PlacePort, port, PlaceName, name).Replace(template)
}

// NodeAddrs is where n nodes listen: addrs when it has n entries, else n
// consecutive ports from base's (base 127.0.0.1:18181 gives …:18181,
// …:18182, …).
func NodeAddrs(base string, addrs []string, n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("a cluster needs at least one node (got %d)", n)
	}
	if len(addrs) > 0 {
		if len(addrs) != n {
			return nil, fmt.Errorf("%d nodes but %d addresses: give one per node, or one base --addr", n, len(addrs))
		}
		return append([]string(nil), addrs...), nil
	}
	host, port, err := net.SplitHostPort(base)
	if err != nil {
		return nil, fmt.Errorf("node addresses from %q: %w", base, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p+n-1 > 65535 {
		return nil, fmt.Errorf("node addresses from %q: bad port", base)
	}
	out := make([]string, n)
	for i := range n {
		out[i] = net.JoinHostPort(host, strconv.Itoa(p+i))
	}
	return out, nil
}

// ClusterConfig says how to start a cluster's nodes.
type ClusterConfig struct {
	// Template is the command line with placeholders; it must contain
	// {addr} or {port} when there is more than one node, so that the nodes
	// do not all listen on one address.
	Template string
	// Addrs are the nodes' addresses (NodeAddrs).
	Addrs []string
	// Name replaces {name}.
	Name string
	// Log gives node i (from 0) its output writer.
	Log func(i int) io.Writer
	// Wrap, when set, rewrites each expanded command (pin.Command, to run
	// it under taskset).
	Wrap func(cmdline string) (string, error)
	// Env is added to each node's environment (AllowLoopbackEnv).
	Env []string
}

// StartCluster starts every node, one after the other, each waited for
// until it accepts connections; on a failure it stops the ones it started.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	n := len(cfg.Addrs)
	if n == 0 {
		return nil, errors.New("start cluster: no node addresses")
	}
	if n > 1 && !strings.Contains(cfg.Template, PlaceAddr) && !strings.Contains(cfg.Template, PlacePort) {
		return nil, fmt.Errorf("start cluster: the engine command needs %s or %s so that its %d nodes listen apart", PlaceAddr, PlacePort, n)
	}
	c := &Cluster{Addrs: cfg.Addrs, Name: cfg.Name}
	for i, addr := range cfg.Addrs {
		cmd := Expand(cfg.Template, i+1, addr, cfg.Name)
		c.Cmds = append(c.Cmds, cmd)
		if cfg.Wrap != nil {
			var err error
			if cmd, err = cfg.Wrap(cmd); err != nil {
				_ = c.Stop(5 * time.Second)
				return nil, err
			}
		}
		var w io.Writer
		if cfg.Log != nil {
			w = cfg.Log(i)
		}
		p, err := Start(ctx, cmd, addr, w, cfg.Env...)
		if err != nil {
			_ = c.Stop(5 * time.Second)
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		c.Nodes = append(c.Nodes, p)
	}
	return c, nil
}

// Stop stops every node (SIGTERM, then SIGKILL after timeout), in
// parallel: a cluster node hands its shards over on SIGTERM, and nodes
// stopped one by one would pass every shard down the line.
func (c *Cluster) Stop(timeout time.Duration) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, p := range c.Nodes {
		wg.Go(func() {
			if err := p.Stop(timeout); err != nil {
				errs[i] = fmt.Errorf("node %d: %w", i+1, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Kill signals node i (from 0) with sig and waits until it exited
// (bounded by timeout, then SIGKILL); it stays down until Relaunch.
func (c *Cluster) Kill(i int, sig syscall.Signal, timeout time.Duration) error {
	return c.Nodes[i].stop(sig, timeout)
}

// Relaunch starts node i (from 0) again with its command and waits until
// it accepts connections.
func (c *Cluster) Relaunch(ctx context.Context, i int) error { return c.Nodes[i].start(ctx) }

// PIDs are the running nodes' process ids (0 for a node that is down).
func (c *Cluster) PIDs() []int {
	out := make([]int, len(c.Nodes))
	for i, p := range c.Nodes {
		out[i] = p.PID()
	}
	return out
}

// NodeID is node i's --cluster-node-id, read from its command line.
func (c *Cluster) NodeID(i int) string {
	v, _ := FlagValue(c.Cmds[i], "cluster-node-id")
	return v
}

// Setting is a flag of the first node's command line (the settings every
// node shares: cluster-name, cluster-nats-url, database-url,
// cluster-shards), or its CHARLA_ variable when set in front of the
// command.
func (c *Cluster) Setting(name string) string {
	v, _ := FlagValue(c.Cmds[0], name)
	return v
}

// FlagValue finds --name (or -name) in a shell command line, as
// "--name value" or "--name=value", or else the CHARLA_NAME=value
// assignment in front of the command (charla's environment form). Quotes
// are removed the way sh would.
func FlagValue(cmdline, name string) (string, bool) {
	words := shellWords(cmdline)
	for i, w := range words {
		for _, p := range []string{"--" + name, "-" + name} {
			if w == p && i+1 < len(words) {
				return words[i+1], true
			}
			if v, ok := strings.CutPrefix(w, p+"="); ok {
				return v, true
			}
		}
	}
	env := "CHARLA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "="
	for _, w := range words {
		if !isAssignment(w) && !strings.Contains(w, "=") {
			break
		}
		if v, ok := strings.CutPrefix(w, env); ok {
			return v, true
		}
	}
	return "", false
}

// shellWords splits a command line into words as sh does for the simple
// cases a command template has: blanks separate, '…' and "…" quote
// (backslash escapes inside double quotes and outside quotes).
func shellWords(s string) []string {
	var words []string
	var b strings.Builder
	in := false
	var quote byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote == '\'':
			if ch == '\'' {
				quote = 0
			} else {
				b.WriteByte(ch)
			}
		case quote == '"':
			switch {
			case ch == '"':
				quote = 0
			case ch == '\\' && i+1 < len(s):
				i++
				b.WriteByte(s[i])
			default:
				b.WriteByte(ch)
			}
		case ch == '\'' || ch == '"':
			quote, in = ch, true
		case ch == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			in = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			if in {
				words = append(words, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(ch)
			in = true
		}
	}
	if in {
		words = append(words, b.String())
	}
	return words
}
