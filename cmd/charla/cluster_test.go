package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"charla"
	"charla/cluster"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/transport/transporttest"
	"charla/wire"
)

// The local NATS with JetStream (the machines here run it; production runs
// a 3-node cluster).
const testNATSURL = "nats://127.0.0.1:4222"

const testShards = 8

// testCluster is a cluster of engine processes on one machine: one NATS, one
// PostgreSQL schema, its own cluster name (so its buckets and subjects are
// its own).
type testCluster struct {
	t     *testing.T
	name  string
	dbURL string
	js    jetstream.JetStream
	nodes map[string]*engineProc
	flags []string
}

func natsJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("NATS at %s: %v", url, err)
		}
		t.Skipf("NATS at %s: %v (start it: nats-server -js)", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func startCluster(t *testing.T, nodes ...string) *testCluster {
	t.Helper()
	c := newCluster(t, natsJetStream(t, testNATSURL))
	for _, n := range nodes {
		c.start(n)
	}
	c.waitPlaced(nodes)
	return c
}

// newCluster prepares a cluster over js's NATS (its URL in the flags) and a
// fresh PostgreSQL schema; its nodes are started with start.
func newCluster(t *testing.T, js jetstream.JetStream, urls ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, name: "t" + uuid.NewString()[:8], dbURL: pgtest.SchemaURL(t), js: js, nodes: map[string]*engineProc{}}
	if _, err := postgres.MigrateURL(context.Background(), c.dbURL); err != nil {
		t.Fatal(err)
	}
	natsURL := testNATSURL
	if len(urls) > 0 {
		natsURL = strings.Join(urls, ",")
	}
	c.flags = []string{"--database-url", c.dbURL, "--cluster-nats-url", natsURL, "--cluster-name", c.name,
		"--cluster-shards", strconv.Itoa(testShards), "--cluster-lease-ttl", "1500ms", "--cluster-request-timeout", "1s"}
	t.Cleanup(func() {
		for n, p := range c.nodes {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
			// The nodes are built with -race: a race there is only in
			// their logs. CHARLA_TEST_LOGS=1 prints the logs of a test
			// that passed too.
			if log := p.logs.String(); strings.Contains(log, "DATA RACE") {
				t.Errorf("node %s had a data race:\n%s", n, log)
			} else if t.Failed() || os.Getenv("CHARLA_TEST_LOGS") != "" {
				t.Logf("node %s:\n%s", n, log)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, b := range []string{c.name + "_leases", c.name + "_nodes"} {
			_ = c.js.DeleteKeyValue(ctx, b)
		}
		_ = c.js.DeleteStream(ctx, c.name+"_spool")
	})
	return c
}

func (c *testCluster) start(node string, extra ...string) *engineProc {
	p := startEngine(c.t, freeAddr(c.t), c.t.TempDir(), append(append(c.flags, "--cluster-node-id", node), extra...)...)
	c.nodes[node] = p
	return p
}

// owners reads the lease bucket: the node of each shard that has one.
func (c *testCluster) owners() map[int]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, c.name+"_leases")
	if err != nil {
		return nil
	}
	out := map[int]string{}
	for s := range testShards {
		e, err := kv.Get(ctx, "shard."+strconv.Itoa(s))
		if err != nil {
			continue
		}
		var v struct{ Node string }
		if json.Unmarshal(e.Value(), &v) == nil && v.Node != "" {
			out[s] = v.Node
		}
	}
	return out
}

// waitPlaced waits until every shard is owned by one of nodes.
func (c *testCluster) waitPlaced(nodes []string) map[int]string {
	c.t.Helper()
	live := map[string]bool{}
	for _, n := range nodes {
		live[n] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		o := c.owners()
		placed, held := 0, map[string]int{}
		for _, n := range o {
			if live[n] {
				placed++
				held[n]++
			}
		}
		// Placed and balanced: nothing moves any more unless a node
		// comes or goes.
		balanced := true
		for n := range live {
			if held[n] < testShards/len(live) || held[n] > (testShards+len(live)-1)/len(live) {
				balanced = false
			}
		}
		if placed == testShards && balanced {
			return o
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after 30 s the shards are owned by %v, want all %d by %v", o, testShards, nodes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *testCluster) ownerOf(conv charla.ConvID) string {
	return c.owners()[cluster.ShardOf(conv, testShards)]
}

// stored reads conv's messages from PostgreSQL: client_msg_id by seq.
func (c *testCluster) stored(conv charla.ConvID) map[charla.Seq]string {
	c.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.dbURL)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT seq, client_msg_id FROM messages WHERE conversation_id = $1`, string(conv))
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[charla.Seq]string{}
	for rows.Next() {
		var seq int64
		var cmid string
		if err := rows.Scan(&seq, &cmid); err != nil {
			c.t.Fatal(err)
		}
		out[charla.Seq(seq)] = cmid
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// checkLog asserts that PostgreSQL holds exactly the acked messages of conv,
// each once, at seqs 1..n with no gap.
func (c *testCluster) checkLog(conv charla.ConvID, acked map[string]charla.Seq) {
	c.t.Helper()
	stored := c.stored(conv)
	if len(stored) != len(acked) {
		c.t.Errorf("%d messages stored, %d acked", len(stored), len(acked))
	}
	for seq := charla.Seq(1); seq <= charla.Seq(len(stored)); seq++ {
		if _, ok := stored[seq]; !ok {
			c.t.Errorf("seq %d missing: the log has a gap", seq)
		}
	}
	for cmid, seq := range acked {
		if stored[seq] != cmid {
			c.t.Errorf("%s acked at seq %d, stored there: %q", cmid, seq, stored[seq])
		}
	}
}

func TestClusterClientsOnDifferentNodes(t *testing.T) {
	c := startCluster(t, "n1", "n2", "n3")
	const conv, perClient = charla.ConvID("team"), 30
	nodes := []string{"n1", "n2", "n3"}
	t.Logf("%s is owned by %s", conv, c.ownerOf(conv))
	var clients []*transporttest.Client
	for i, n := range nodes {
		cl := dial(t, c.nodes[n].addr, "u"+strconv.Itoa(i))
		subscribe(t, cl, conv, 0)
		clients = append(clients, cl)
	}
	// Every client sends at once, each on its own node.
	var firstID string
	for i, cl := range clients {
		for j := range perClient {
			cmid := uuid.NewString()
			if firstID == "" {
				firstID = cmid
			}
			cl.Send(wire.Frame{Type: wire.TypeSend, Conv: conv, Ref: strconv.Itoa(j), ClientMsgID: cmid,
				Body: json.RawMessage(fmt.Sprintf(`{"text":"%d from %s"}`, j, nodes[i]))})
		}
	}
	total := perClient * len(clients)
	acked := map[string]charla.Seq{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Go(func() {
			// Each client: its own acks, and every message of the
			// conversation once, in seq order.
			next, acks := charla.Seq(1), 0
			deadline := time.Now().Add(30 * time.Second)
			for next <= charla.Seq(total) || acks < perClient {
				if time.Now().After(deadline) {
					t.Errorf("client on %s: %d acks, messages up to %d of %d after 30 s", nodes[i], acks, next-1, total)
					return
				}
				f := cl.Next(30 * time.Second)
				switch f.Type {
				case wire.TypeAck:
					acks++
					mu.Lock()
					acked[f.ClientMsgID] = f.Seq
					mu.Unlock()
				case wire.TypeMsg:
					if f.Seq != next {
						t.Errorf("client on %s: msg seq %d, want %d", nodes[i], f.Seq, next)
						return
					}
					next++
				case wire.TypeError:
					t.Errorf("client on %s: %+v", nodes[i], f)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	c.checkLog(conv, acked)
	// Each node says in /readyz what it holds: together, every shard once
	// (after a hand-over in flight at start has settled).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		held := 0
		for _, n := range nodes {
			var r struct {
				Extra struct {
					Cluster clusterReadiness `json:"cluster"`
				} `json:"extra"`
			}
			transporttest.DoJSON(t, "GET", "http://"+c.nodes[n].addr+"/readyz?user=root&role=admin", nil, 200, &r)
			if got := r.Extra.Cluster; got.Node != n || got.Of != testShards || len(got.Nodes) != 3 {
				t.Fatalf("%s /readyz cluster: %+v", n, got)
			}
			held += r.Extra.Cluster.Shards
		}
		if held == testShards {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes hold %d shards together, want %d", held, testShards)
		}
	}
	// The two clients not on the owner had their sends forwarded, and the
	// owner served them: the nodes count both.
	var forwarded, served float64
	for _, n := range nodes {
		forwarded += metricValue(t, c.nodes[n].addr, "charla_cluster_forwarded_total")
		served += metricValue(t, c.nodes[n].addr, "charla_cluster_served_total")
	}
	if forwarded < 2*perClient || served < 2*perClient {
		t.Errorf("forwarded %v, served %v: want %d or more each", forwarded, served, 2*perClient)
	}
	// A resend through another node is the same message.
	first := acked[firstID]
	clients[2].Send(wire.Frame{Type: wire.TypeSend, Conv: conv, Ref: "again", ClientMsgID: firstID, Body: json.RawMessage(`{"text":"0 from n1"}`)})
	if f := clients[2].NextOf(wire.TypeAck, 10*time.Second); f.Seq != first || !f.Duplicate {
		t.Fatalf("resend through n3: %+v, want a duplicate of seq %d", f, first)
	}
}

// sender sends conv's messages from one client at a paced rate, and resends
// each refused or unanswered one with its client_msg_id until it is acked.
type sender struct {
	name  string
	cl    *transporttest.Client
	conv  charla.ConvID
	mu    sync.Mutex
	acked map[string]charla.Seq
	ackAt map[string]time.Time
	first map[string]time.Time // when first sent
	sent  map[string]time.Time // not acked yet, when last sent
	body  map[string]json.RawMessage
}

func newSender(name string, cl *transporttest.Client, conv charla.ConvID) *sender {
	return &sender{name: name, cl: cl, conv: conv, acked: map[string]charla.Seq{}, ackAt: map[string]time.Time{},
		first: map[string]time.Time{}, sent: map[string]time.Time{}, body: map[string]json.RawMessage{}}
}

func (s *sender) send(cmid string) {
	s.mu.Lock()
	s.sent[cmid] = time.Now()
	body := s.body[cmid]
	s.mu.Unlock()
	// From timers too: a write error means the socket is gone, and the
	// message stays unacked, which the test reports.
	_ = s.cl.SendRaw(wire.Encode(wire.Frame{Type: wire.TypeSend, Conv: s.conv, Ref: cmid, ClientMsgID: cmid, Body: body}))
}

// run sends at rate msg/s until stop, then until every message is acked or
// the deadline passes; it returns the messages never acked.
func (s *sender) run(rate int, stop <-chan struct{}, deadline time.Time) []string {
	frames := make(chan wire.Frame, 1024)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case f, ok := <-s.cl.Frames():
				if !ok {
					return
				}
				select {
				case frames <- f:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	resend := time.NewTicker(500 * time.Millisecond)
	defer resend.Stop()
	n, sending := 0, true
	for time.Now().Before(deadline) {
		select {
		case <-stop:
			sending, stop = false, nil
		case <-tick.C:
			if sending {
				cmid := uuid.NewString()
				n++
				s.mu.Lock()
				s.body[cmid] = json.RawMessage(fmt.Sprintf(`{"text":"%s %d"}`, s.name, n))
				s.first[cmid] = time.Now()
				s.mu.Unlock()
				s.send(cmid)
			}
		case f := <-frames:
			switch f.Type {
			case wire.TypeAck:
				s.mu.Lock()
				s.acked[f.ClientMsgID] = f.Seq
				if _, ok := s.ackAt[f.ClientMsgID]; !ok {
					s.ackAt[f.ClientMsgID] = time.Now()
				}
				delete(s.sent, f.ClientMsgID)
				s.mu.Unlock()
			case wire.TypeError:
				if f.Code == charla.CodeUnavailable || f.Code == charla.CodeRateLimited {
					time.AfterFunc(100*time.Millisecond, func() { s.send(f.Ref) })
				}
			}
		case <-resend.C:
			// A send whose answer was lost with a node: sent again.
			s.mu.Lock()
			var late []string
			for cmid, at := range s.sent {
				if time.Since(at) > 3*time.Second {
					late = append(late, cmid)
				}
			}
			s.mu.Unlock()
			for _, cmid := range late {
				s.send(cmid)
			}
		}
		if !sending {
			s.mu.Lock()
			left := len(s.sent)
			s.mu.Unlock()
			if left == 0 {
				return nil
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var lost []string
	for cmid := range s.sent {
		lost = append(lost, cmid)
	}
	return lost
}

func TestClusterOwnerKilledUnderLoad(t *testing.T) {
	c := startCluster(t, "n1", "n2", "n3")
	const conv = charla.ConvID("busy")
	owner := c.ownerOf(conv)
	var others []string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != owner {
			others = append(others, n)
		}
	}
	t.Logf("%s is owned by %s; senders on %v", conv, owner, others)

	// A subscriber on the owner: it loses its node and resumes elsewhere.
	watcher := dial(t, c.nodes[owner].addr, "watcher")
	subscribe(t, watcher, conv, 0)
	// Subscribers on the other nodes: they follow the conversation to its
	// new owner without a gap.
	var stopWatches []func() charla.Seq
	for _, n := range others {
		stopWatches = append(stopWatches, watch(t, dial(t, c.nodes[n].addr, "w-"+n), conv))
	}
	senders := []*sender{
		newSender("a", dial(t, c.nodes[others[0]].addr, "a"), conv),
		newSender("b", dial(t, c.nodes[others[1]].addr, "b"), conv),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	lost := make([][]string, len(senders))
	for i, s := range senders {
		wg.Go(func() { lost[i] = s.run(150, stop, time.Now().Add(60*time.Second)) })
	}
	// The watcher reads until the kill.
	var seen charla.Seq
	for until := time.Now().Add(2 * time.Second); time.Now().Before(until); {
		f := watcher.Next(5 * time.Second)
		if f.Type == wire.TypeMsg {
			if f.Seq != seen+1 {
				t.Fatalf("watcher: seq %d after %d", f.Seq, seen)
			}
			seen = f.Seq
		}
	}
	killed := time.Now()
	if err := c.nodes[owner].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.nodes[owner].cmd.Wait()
	time.Sleep(4 * time.Second) // load goes on through the takeover
	close(stop)
	wg.Wait()
	for i, l := range lost {
		if len(l) > 0 {
			t.Fatalf("sender %s: %d messages never acked (first %s)", senders[i].name, len(l), l[0])
		}
	}
	// Writable again: the first ack of a message first sent after the kill.
	var firstAfter time.Time
	acked := map[string]charla.Seq{}
	for _, s := range senders {
		for cmid, seq := range s.acked {
			acked[cmid] = seq
			if at := s.ackAt[cmid]; s.first[cmid].After(killed) && (firstAfter.IsZero() || at.Before(firstAfter)) {
				firstAfter = at
			}
		}
	}
	if firstAfter.IsZero() {
		t.Fatal("no message sent after the kill was acked")
	}
	t.Logf("%d messages acked; writable again %s after the kill (lease ttl 1.5 s)", len(acked), firstAfter.Sub(killed).Round(time.Millisecond))
	c.checkLog(conv, acked)

	for until := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if len(c.stored(conv)) == len(acked) || time.Now().After(until) {
			break
		}
	}
	time.Sleep(time.Second)
	for i, stopWatch := range stopWatches {
		if last := stopWatch(); last != charla.Seq(len(acked)) {
			t.Errorf("the subscriber on %s saw up to seq %d of %d", others[i], last, len(acked))
		}
	}
	// The watcher reconnects to a live node and resumes where it was.
	w2 := dial(t, c.nodes[others[0]].addr, "watcher")
	if f := subscribe(t, w2, conv, seen); f.Head != charla.Seq(len(acked)) {
		t.Fatalf("resubscribe with since %d: %+v, want head %d", seen, f, len(acked))
	}
	for seq := seen + 1; seq <= charla.Seq(len(acked)); seq++ {
		if f := w2.NextOf(wire.TypeMsg, 10*time.Second); f.Seq != seq {
			t.Fatalf("resumed watcher: seq %d, want %d", f.Seq, seq)
		}
	}
}

// subscribe subscribes cl to conv from since, as a client does: again after
// an unavailable (a shard just taken is served once its new owner has
// claimed it in the store).
func subscribe(t *testing.T, cl *transporttest.Client, conv charla.ConvID, since charla.Seq) wire.Frame {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		cl.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Since: since, Ref: "sub"})
		for {
			f := cl.Next(15 * time.Second)
			if f.Type == wire.TypeSubscribed && f.Ref == "sub" {
				return f
			}
			if f.Type == wire.TypeError && f.Ref == "sub" {
				if f.Code != charla.CodeUnavailable {
					t.Fatalf("subscribe %s: %+v", conv, f)
				}
				time.Sleep(100 * time.Millisecond)
				break
			}
		}
	}
	t.Fatalf("subscribe %s: unavailable for 15 s", conv)
	return wire.Frame{}
}

// sendersOn connects one sender of conv to each of nodes.
func (c *testCluster) sendersOn(conv charla.ConvID, nodes []string) []*sender {
	var out []*sender
	for _, n := range nodes {
		out = append(out, newSender(n, dial(c.t, c.nodes[n].addr, "s"+n), conv))
	}
	return out
}

// others are the nodes of c but not.
func (c *testCluster) others(not string) []string {
	var out []string
	for _, n := range []string{"n1", "n2", "n3"} {
		if _, ok := c.nodes[n]; ok && n != not {
			out = append(out, n)
		}
	}
	return out
}

// watch reads conv's messages on cl in the background, checking that they
// come in seq order with no gap; the returned func stops it and says the last
// seq seen.
func watch(t *testing.T, cl *transporttest.Client, conv charla.ConvID) func() charla.Seq {
	t.Helper()
	subscribe(t, cl, conv, 0)
	stop, done := make(chan struct{}), make(chan charla.Seq)
	go func() {
		var last charla.Seq
		defer func() { done <- last }()
		for {
			select {
			case f, ok := <-cl.Frames():
				if !ok {
					return
				}
				if f.Type == wire.TypeMsg {
					if f.Seq != last+1 {
						t.Errorf("watcher: seq %d after %d: %s %s %s", f.Seq, last, f.ClientMsgID, f.Body, f.Sender)
					}
					last = f.Seq
				}
			case <-cl.Done():
				return
			case <-stop:
				return
			}
		}
	}()
	return func() charla.Seq { close(stop); return <-done }
}

// load runs senders at rate msg/s each until stop is closed, then until
// everything is acked; it fails the test on a message never acked and
// returns every ack.
func load(t *testing.T, senders []*sender, rate int, stop <-chan struct{}) func() map[string]charla.Seq {
	var wg sync.WaitGroup
	lost := make([][]string, len(senders))
	for i, s := range senders {
		wg.Go(func() { lost[i] = s.run(rate, stop, time.Now().Add(90*time.Second)) })
	}
	return func() map[string]charla.Seq {
		wg.Wait()
		acked := map[string]charla.Seq{}
		for i, s := range senders {
			if len(lost[i]) > 0 {
				t.Fatalf("sender %s: %d messages never acked (first %s)", s.name, len(lost[i]), lost[i][0])
			}
			for cmid, seq := range s.acked {
				acked[cmid] = seq
			}
		}
		return acked
	}
}

// firstAckAfter is when the first message first sent after at was acked.
func firstAckAfter(senders []*sender, at time.Time) time.Duration {
	var first time.Time
	for _, s := range senders {
		for cmid, ackAt := range s.ackAt {
			if s.first[cmid].After(at) && (first.IsZero() || ackAt.Before(first)) {
				first = ackAt
			}
		}
	}
	if first.IsZero() {
		return -1
	}
	return first.Sub(at)
}

func TestClusterPausedOwnerIsFenced(t *testing.T) {
	c := startCluster(t, "n1", "n2", "n3")
	const conv = charla.ConvID("paused")
	owner := c.ownerOf(conv)
	other := c.others(owner)[0]
	senders := []*sender{
		newSender("on-owner", dial(t, c.nodes[owner].addr, "p"), conv),
		newSender("elsewhere", dial(t, c.nodes[other].addr, "o"), conv),
	}
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	p := c.nodes[owner].cmd.Process
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// Past the lease: another node takes the shard while the owner sleeps.
	for c.ownerOf(conv) == owner && time.Since(paused) < 15*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	newOwner := c.ownerOf(conv)
	time.Sleep(time.Second)
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	time.Sleep(3 * time.Second)
	close(stop)
	acked := wait()
	if newOwner == owner {
		t.Fatalf("no node took %s from the paused %s in 15 s", conv, owner)
	}
	t.Logf("%s paused %s, %s took %s; %d messages acked; the resumed node's client was served again %s after SIGCONT",
		owner, time.Since(paused).Round(time.Millisecond), newOwner, conv, len(acked), firstAckAfter(senders[:1], resumed).Round(time.Millisecond))
	c.checkLog(conv, acked)
	if firstAckAfter(senders[:1], resumed) < 0 {
		t.Fatalf("the client of the resumed node was not served again:\n%s", c.nodes[owner].logs.String())
	}
}

func TestClusterNodesJoinUnderLoad(t *testing.T) {
	c := startCluster(t, "n1")
	const conv = charla.ConvID("moving")
	stopWatch := watch(t, dial(t, c.nodes["n1"].addr, "w"), conv)
	senders := []*sender{newSender("s", dial(t, c.nodes["n1"].addr, "s"), conv)}
	stop := make(chan struct{})
	wait := load(t, senders, 100, stop)
	time.Sleep(500 * time.Millisecond)
	c.start("n2")
	c.start("n3")
	// Subscribers on the new nodes, from the start of the conversation:
	// they follow it through every move, remote to remote included.
	stopNew := []func() charla.Seq{
		watch(t, dial(t, c.nodes["n2"].addr, "w2"), conv),
		watch(t, dial(t, c.nodes["n3"].addr, "w3"), conv),
	}
	// The shards spread: n1 gives up what is above its share.
	deadline := time.Now().Add(30 * time.Second)
	for {
		held := map[string]int{}
		for _, n := range c.owners() {
			held[n]++
		}
		if held["n1"] <= (testShards+2)/3 && held["n2"] > 0 && held["n3"] > 0 {
			t.Logf("shards per node: %v", held)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the shards are held %v", held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	acked := wait()
	c.checkLog(conv, acked)
	// The watcher on n1 followed the conversation wherever it went.
	for until := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(until) {
			break
		}
		if len(c.stored(conv)) == len(acked) {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	if last := stopWatch(); last != charla.Seq(len(acked)) {
		t.Errorf("the watcher on n1 saw up to seq %d of %d", last, len(acked))
	}
	for i, stop := range stopNew {
		if last := stop(); last != charla.Seq(len(acked)) {
			t.Errorf("the watcher on n%d saw up to seq %d of %d", i+2, last, len(acked))
		}
	}
	t.Logf("%d messages acked while %s moved to %s", len(acked), conv, c.ownerOf(conv))
}

func TestClusterSIGTERMHandsOver(t *testing.T) {
	c := startCluster(t, "n1", "n2", "n3")
	const conv = charla.ConvID("leaving")
	owner := c.ownerOf(conv)
	others := c.others(owner)
	onOwner := dial(t, c.nodes[owner].addr, "w")
	stopWatch := watch(t, dial(t, c.nodes[others[1]].addr, "w2"), conv)
	senders := []*sender{newSender("s", dial(t, c.nodes[others[0]].addr, "s"), conv)}
	stop := make(chan struct{})
	wait := load(t, senders, 100, stop)
	time.Sleep(time.Second)
	term := time.Now()
	p := c.nodes[owner]
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("%s did not exit cleanly on SIGTERM: %v\n%s", owner, err, p.logs.String())
	}
	select {
	case <-onOwner.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the leaving node's client was not closed")
	}
	if code := onOwner.CloseCode(); code != 1012 {
		t.Fatalf("the leaving node closed its client with %d, want 1012", code)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	acked := wait()
	c.checkLog(conv, acked)
	writable := firstAckAfter(senders, term)
	t.Logf("%s left on SIGTERM; %d messages acked; writable again %s after the signal (lease ttl 1.5 s)", owner, len(acked), writable.Round(time.Millisecond))
	if writable < 0 {
		t.Fatal("nothing sent after the SIGTERM was acked")
	}
	time.Sleep(500 * time.Millisecond)
	if last := stopWatch(); last != charla.Seq(len(acked)) {
		t.Fatalf("the watcher on %s saw up to seq %d of %d", others[1], last, len(acked))
	}
}

// natsServer is a nats-server of the test's own (Debian's binary), for the
// tests that stop, restart or cluster NATS without touching the machine's.
type natsServer struct {
	t      *testing.T
	args   []string
	url    string
	cmd    *exec.Cmd
	waited chan struct{} // closed once cmd has exited and been waited for
}

func natsBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("nats-server: %v", err)
		}
		t.Skipf("nats-server: %v (Debian: apt-get install nats-server)", err)
	}
	return bin
}

// startNATS starts a JetStream server; routes, when given, make it one of a
// NATS cluster (its own route address first).
func startNATS(t *testing.T, name string, routes ...string) *natsServer {
	t.Helper()
	var n *natsServer
	// A port free when picked can be taken before the server binds it: by
	// a route port of this test (free until its server starts, so never
	// picked here), or by anything else on the machine (the server exits,
	// and another port is tried).
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		for slices.Contains(routes, "nats://"+addr) {
			addr = freeAddr(t)
		}
		_, port, _ := strings.Cut(addr, ":")
		args := []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", t.TempDir(), "-n", name}
		if len(routes) > 0 {
			args = append(args, "--cluster_name", "charlatest", "--cluster", routes[0], "--routes", strings.Join(routes[1:], ","))
		}
		n = &natsServer{t: t, args: args, url: "nats://" + addr}
		err := n.tryStart()
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; trying another port", err)
	}
	t.Cleanup(func() { n.stop(syscall.SIGKILL) })
	return n
}

// start starts the server again, on its port and store.
func (n *natsServer) start() {
	n.t.Helper()
	if err := n.tryStart(); err != nil {
		n.t.Fatal(err)
	}
}

// tryStart starts the server and waits until it listens (10 s at most); if
// it exits or does not listen, the error has what it printed.
func (n *natsServer) tryStart() error {
	var out transporttest.LogBuffer
	n.cmd = exec.Command(natsBinary(n.t), n.args...)
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	if err := n.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		close(exited)
	}()
	n.waited = exited
	_, hostPort, _ := strings.Cut(n.url, "//")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("nats-server %v exited before it listened:\n%s", n.args, out.String())
		default:
		}
		if c, err := net.Dial("tcp", hostPort); err == nil {
			c.Close()
			return nil
		}
	}
	n.stop(syscall.SIGKILL)
	return fmt.Errorf("nats-server %v did not listen in 10 s:\n%s", n.args, out.String())
}

func (n *natsServer) stop(sig syscall.Signal) {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.waited:
	default:
		_ = n.cmd.Process.Signal(sig)
		<-n.waited
	}
}

// convOwnedBy finds a conversation whose shard node owns.
func (c *testCluster) convOwnedBy(node, prefix string) charla.ConvID {
	c.t.Helper()
	owners := c.owners()
	for i := range 1000 {
		conv := charla.ConvID(fmt.Sprintf("%s-%d", prefix, i))
		if owners[cluster.ShardOf(conv, testShards)] == node {
			return conv
		}
	}
	c.t.Fatalf("no conversation of %s in %v", node, owners)
	return ""
}

// servedAgain sends one message on each node's client and waits for its
// ack: every node serves the conversation again.
func servedAgain(t *testing.T, senders []*sender) {
	t.Helper()
	stop := make(chan struct{})
	close(stop)
	for _, s := range senders {
		cmid := uuid.NewString()
		s.mu.Lock()
		s.body[cmid] = json.RawMessage(`{"text":"after"}`)
		s.first[cmid] = time.Now()
		s.mu.Unlock()
		s.send(cmid)
		if lost := s.run(1, stop, time.Now().Add(30*time.Second)); len(lost) > 0 {
			t.Fatalf("sender %s: not served again within 30 s", s.name)
		}
	}
}

func TestClusterNodeCutFromNATS(t *testing.T) {
	c := newCluster(t, natsJetStream(t, testNATSURL))
	px := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()), "nats", "127.0.0.1:0", "127.0.0.1:4222")
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	c.start("n1")
	c.start("n2")
	c.start("n3", "--cluster-nats-url", "nats://"+px.Listen)
	c.waitPlaced([]string{"n1", "n2", "n3"})
	conv := c.convOwnedBy("n3", "cut")
	senders := []*sender{
		newSender("inside", dial(t, c.nodes["n3"].addr, "i"), conv),
		newSender("outside", dial(t, c.nodes["n1"].addr, "o"), conv),
	}
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	px.Stop() // n3 loses NATS: it stops writing on its own, the others take its shards
	cut := time.Now()
	for c.ownerOf(conv) == "n3" && time.Since(cut) < 15*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	took := c.ownerOf(conv)
	time.Sleep(time.Second)
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	acked := wait()
	if took == "n3" {
		t.Fatalf("nobody took %s from n3 in 15 s of its cut", conv)
	}
	t.Logf("n3 cut from NATS: %s took %s; writable again %s after the cut; %d messages acked", took, conv,
		firstAckAfter(senders[1:], cut).Round(time.Millisecond), len(acked))
	c.checkLog(conv, acked)
	servedAgain(t, senders)
}

func TestClusterNATSRestart(t *testing.T) {
	ns := startNATS(t, "solo")
	c := newCluster(t, natsJetStream(t, ns.url), ns.url)
	for _, n := range []string{"n1", "n2", "n3"} {
		c.start(n)
	}
	c.waitPlaced([]string{"n1", "n2", "n3"})
	const conv = charla.ConvID("natsrestart")
	owner := c.ownerOf(conv)
	senders := c.sendersOn(conv, c.others(owner))
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	ns.stop(syscall.SIGTERM)
	time.Sleep(2 * time.Second)
	ns.start() // same port and store: the leases bucket survives
	back := time.Now()
	time.Sleep(4 * time.Second)
	close(stop)
	acked := wait()
	writable := firstAckAfter(senders, back)
	t.Logf("NATS down 2 s; writable again %s after it was back; %d messages acked", writable.Round(time.Millisecond), len(acked))
	// The leases are taken again within a few TTLs of NATS coming back, not
	// when nats.go gets round to recreating its watchers (18 s measured).
	if writable < 0 || writable > 10*time.Second {
		t.Errorf("writable again %s after NATS came back, want under 10 s", writable)
	}
	c.checkLog(conv, acked)
	servedAgain(t, senders)
}

// startClusterBehindProxy starts three nodes whose database is reached
// through a proxy the test stops and starts (an outage), with timeouts that
// make them see it within about a second.
func startClusterBehindProxy(t *testing.T) (*testCluster, *toxiproxy.Proxy) {
	t.Helper()
	c := newCluster(t, natsJetStream(t, testNATSURL))
	px, proxied := pgtest.Proxy(t, c.dbURL)
	for _, n := range []string{"n1", "n2", "n3"} {
		c.start(n, "--database-url", proxied, "--db-query-timeout", "1s", "--db-retry-attempts", "2", "--db-connect-timeout", "500ms")
	}
	c.waitPlaced([]string{"n1", "n2", "n3"})
	return c, px
}

func TestClusterDatabaseOutageAndOwnerKilled(t *testing.T) {
	c, px := startClusterBehindProxy(t)
	const conv = charla.ConvID("dboutage")
	owner := c.ownerOf(conv)
	senders := c.sendersOn(conv, c.others(owner))
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	px.Stop() // the database is gone: the owner acks from the spool, a JetStream stream
	down := time.Now()
	time.Sleep(time.Second)
	killed := time.Now()
	if err := c.nodes[owner].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.nodes[owner].cmd.Wait()
	time.Sleep(time.Second)
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	time.Sleep(4 * time.Second)
	close(stop)
	acked := wait()
	spooled := ackedBetween(senders, down, killed)
	t.Logf("database down 2 s, %s killed meanwhile; %d messages acked from the spool before the kill; writable again %s after the database was back; %d messages acked",
		owner, spooled, firstAckAfter(senders, back).Round(time.Millisecond), len(acked))
	if spooled == 0 {
		t.Error("no message was acked while the database was down: the spool took none")
	}
	drained := time.Now()
	c.waitDrained(conv, len(acked))
	t.Logf("the spool drained %s after the load stopped", time.Since(drained).Round(time.Millisecond))
	c.checkLog(conv, acked)
}

// ackedBetween counts the senders' messages acked between from and to.
func ackedBetween(senders []*sender, from, to time.Time) int {
	n := 0
	for _, s := range senders {
		s.mu.Lock()
		for cmid := range s.acked {
			if at := s.ackAt[cmid]; at.After(from) && at.Before(to) {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// waitDrained waits (20 s at most) until PostgreSQL holds n messages of
// conv: what a spool acked reaches it as the spool drains. If it does not,
// the test's log says what conv's shard still has in the spool stream.
func (c *testCluster) waitDrained(conv charla.ConvID, n int) {
	for until := time.Now().Add(20 * time.Second); len(c.stored(conv)) < n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(until) {
			c.t.Logf("PostgreSQL holds %d of %d messages of %s after 20 s; %s", len(c.stored(conv)), n, conv, c.spoolLeft(conv))
			return
		}
	}
}

// spoolLeft describes the records of conv's shard in the spool stream:
// each record's stream sequence and the seqs of conv it holds.
func (c *testCluster) spoolLeft(conv charla.ConvID) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, c.name+"_spool")
	if err != nil {
		return fmt.Sprintf("the spool stream cannot be read: %v", err)
	}
	subj := fmt.Sprintf("%s.spool.%d", c.name, cluster.ShardOf(conv, testShards))
	var out []string
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Sprintf("reading %s: %v", subj, err)
		}
		var msgs []charla.Message
		_ = json.Unmarshal(m.Data, &msgs)
		var seqs []charla.Seq
		for _, msg := range msgs {
			if msg.Conv == conv {
				seqs = append(seqs, msg.Seq)
			}
		}
		out = append(out, fmt.Sprintf("#%d %v", m.Sequence, seqs))
		seq = m.Sequence + 1
	}
	return fmt.Sprintf("the spool subject %s holds %d records: %s", subj, len(out), strings.Join(out, ", "))
}

// An owner acking from the spool during a database outage is paused past
// its lease; the database comes back, another node takes the shard (and its
// spool) over; the old owner wakes up. Its spool writes are refused by the
// stream's sequence check and its store writes by the fence, so every
// message acked, from the spool or not, is stored once with no gap.
func TestClusterPausedOwnerDuringOutage(t *testing.T) {
	c, px := startClusterBehindProxy(t)
	const conv = charla.ConvID("pausedspool")
	owner := c.ownerOf(conv)
	senders := []*sender{
		newSender("on-owner", dial(t, c.nodes[owner].addr, "p"), conv),
		newSender("elsewhere", dial(t, c.nodes[c.others(owner)[0]].addr, "o"), conv),
	}
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	px.Stop()
	down := time.Now()
	time.Sleep(time.Second)
	p := c.nodes[owner].cmd.Process
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	time.Sleep(2500 * time.Millisecond) // past the lease
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	// Claims failed while the database was down; now one succeeds.
	newOwner := c.ownerOf(conv)
	for until := time.Now().Add(15 * time.Second); (newOwner == owner || newOwner == "") && time.Now().Before(until); newOwner = c.ownerOf(conv) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	acked := wait()
	if newOwner == owner || newOwner == "" {
		t.Fatalf("no node took %s from the paused %s", conv, owner)
	}
	c.waitDrained(conv, len(acked))
	spooled := ackedBetween(senders, down, paused)
	t.Logf("%s paused during the outage after acking %d messages from the spool, %s took %s over; %d messages acked",
		owner, spooled, newOwner, conv, len(acked))
	if spooled == 0 {
		t.Error("nothing was acked from the spool before the pause")
	}
	c.checkLog(conv, acked)
}

// Leases replicated on a 3-server NATS cluster survive the loss of one server.
func TestClusterOnThreeNATSServers(t *testing.T) {
	var routes []string
	for len(routes) < 3 { // three distinct ports
		if r := "nats://" + freeAddr(t); !slices.Contains(routes, r) {
			routes = append(routes, r)
		}
	}
	var servers []*natsServer
	for i := range 3 {
		others := append([]string{routes[i]}, append(append([]string{}, routes[:i]...), routes[i+1:]...)...)
		servers = append(servers, startNATS(t, fmt.Sprintf("s%d", i), others...))
	}
	urls := []string{servers[0].url, servers[1].url, servers[2].url}
	js := natsJetStream(t, strings.Join(urls, ","))
	// JetStream answers once the three servers have elected a meta leader.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "probe", Replicas: 3})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster's JetStream did not answer in 60 s: %v", err)
		}
	}
	c := newCluster(t, js, urls...)
	for _, n := range []string{"n1", "n2", "n3"} {
		c.start(n, "--cluster-replicas", "3")
	}
	c.waitPlaced([]string{"n1", "n2", "n3"})
	const conv = charla.ConvID("replicated")
	owner := c.ownerOf(conv)
	senders := c.sendersOn(conv, c.others(owner))
	stop := make(chan struct{})
	wait := load(t, senders, 50, stop)
	time.Sleep(time.Second)
	servers[0].stop(syscall.SIGKILL)
	lost := time.Now()
	time.Sleep(5 * time.Second)
	close(stop)
	acked := wait()
	t.Logf("one NATS server of three killed; %d messages acked; first ack of a message sent after it %s later",
		len(acked), firstAckAfter(senders, lost).Round(time.Millisecond))
	c.checkLog(conv, acked)
	servedAgain(t, senders)
}

// metricValue reads one unlabelled series from a node's /metrics.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	code, body := transporttest.Do(t, "GET", "http://"+addr+"/metrics?user=root&role=admin", nil, nil)
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

// inboxLeader waits until the live nodes agree on the inbox leader, one of
// them, and returns it.
func (c *testCluster) inboxLeader(nodes []string) string {
	c.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		seen := map[string]bool{}
		for _, n := range nodes {
			var r struct {
				Extra struct {
					Cluster clusterReadiness `json:"cluster"`
				} `json:"extra"`
			}
			transporttest.DoJSON(c.t, "GET", "http://"+c.nodes[n].addr+"/readyz?user=root&role=admin", nil, 200, &r)
			seen[r.Extra.Cluster.InboxLeader] = true
		}
		if len(seen) == 1 {
			for l := range seen {
				if _, ok := c.nodes[l]; ok && slices.Contains(nodes, l) {
					return l
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the nodes %v see the inbox leaders %v after 15 s", nodes, seen)
		}
	}
}

func dialAs(t *testing.T, addr, user string, role charla.Role) *transporttest.Client {
	t.Helper()
	c, err := transporttest.DialURL(t, fmt.Sprintf("ws://%s/v1/ws?user=%s&role=%s", addr, user, role), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Next(10 * time.Second); f.Type != wire.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	return c
}

// conversationOf waits for cl's next conversation frame of conv that ok
// accepts; an error frame with ref fails the test.
func conversationOf(t *testing.T, cl *transporttest.Client, conv charla.ConvID, ref string, ok func(wire.Frame) bool) wire.Frame {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		f := cl.Next(time.Until(deadline))
		if f.Type == wire.TypeError && ref != "" && f.Ref == ref {
			t.Fatalf("%s answered %+v", ref, f)
		}
		if f.Type == wire.TypeConversation && f.Conv == conv && (ref == "" || f.Ref == ref) && ok(f) {
			return f
		}
	}
}

// presenceOf waits for cl to be told user's presence state.
func presenceOf(t *testing.T, cl *transporttest.Client, user, state string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if f := cl.NextOf(wire.TypePresence, time.Until(deadline)); f.User == user && f.State == state {
			return
		}
	}
}

// TestClusterAgentsOnEveryNode: agents on any node work one inbox. The
// leader runs it; agents elsewhere see its conversation frames and
// presence and act with answers; when the leader is killed, another node
// takes the inbox over with what was saved, and every agent is told to join
// again and goes on.
func TestClusterAgentsOnEveryNode(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	c := startCluster(t, nodes...)
	leader := c.inboxLeader(nodes)
	others := c.others(leader)
	t.Logf("the inbox runs on %s", leader)

	ana := dialAs(t, c.nodes[others[0]].addr, "ana", charla.RoleAgent)
	boss := dialAs(t, c.nodes[others[1]].addr, "boss", charla.RoleAdmin)
	for _, cl := range []*transporttest.Client{ana, boss} {
		cl.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
		if f := cl.NextOf(wire.TypeInbox, 15*time.Second); f.Ref != "in" {
			t.Fatalf("inbox answer %+v", f)
		}
	}
	presenceOf(t, boss, "ana", wire.PresenceOnline)

	const conv = charla.ConvID("cust1")
	customer := dialAs(t, c.nodes[leader].addr, "cust1", charla.RoleCustomer)
	customer.Send(transporttest.SendFrame(conv, uuid.NewString(), "hola", "s"))
	if f := customer.NextOf(wire.TypeAck, 15*time.Second); f.Ref != "s" {
		t.Fatalf("send: %+v", f)
	}
	conversationOf(t, ana, conv, "", func(f wire.Frame) bool { return f.Assignee == "" })
	ana.Send(wire.Frame{Type: wire.TypeTake, Conv: conv, Ref: "take"})
	conversationOf(t, ana, conv, "take", func(f wire.Frame) bool { return f.Assignee == "ana" })
	conversationOf(t, boss, conv, "", func(f wire.Frame) bool { return f.Assignee == "ana" })
	// REST on a follower: the action's answer comes back from the leader
	// to the waiting request; a list is read here, from PostgreSQL.
	var moved wire.Conversation
	transporttest.DoJSON(t, "POST", "http://"+c.nodes[others[1]].addr+"/v1/conversations/cust1/transfer?user=boss&role=admin",
		map[string]string{"assignee": "bea"}, 200, &moved)
	if moved.Assignee != "bea" {
		t.Fatalf("transfer over REST answered %+v, want bea assigned", moved)
	}
	conversationOf(t, ana, conv, "", func(f wire.Frame) bool { return f.Assignee == "bea" })
	var list struct{ Conversations []wire.Conversation }
	transporttest.DoJSON(t, "GET", "http://"+c.nodes[others[0]].addr+"/v1/conversations?user=boss&role=admin", nil, 200, &list)
	if len(list.Conversations) != 1 || list.Conversations[0].Assignee != "bea" {
		t.Fatalf("listed on a follower: %+v, want cust1 assigned to bea", list.Conversations)
	}

	killed := time.Now()
	if err := c.nodes[leader].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.nodes[leader].cmd.Wait()
	for _, cl := range []*transporttest.Client{ana, boss} {
		if f := cl.NextOf(wire.TypeInbox, 15*time.Second); f.Ref != "" {
			t.Fatalf("after the leader's death: %+v, want an inbox frame without ref", f)
		}
	}
	t.Logf("the agents were told to join the new leader %s after the kill (lease ttl 1.5 s)", time.Since(killed).Round(time.Millisecond))
	boss.Send(wire.Frame{Type: wire.TypeResolve, Conv: conv, Ref: "done"})
	f := conversationOf(t, boss, conv, "done", func(wire.Frame) bool { return true })
	if f.Status != "resolved" || f.Assignee != "bea" {
		t.Fatalf("resolve on the new leader answered %+v, want resolved and still bea's", f)
	}
	// The new leader learnt who is online from the agents that joined it.
	carl := dialAs(t, c.nodes[others[0]].addr, "carl", charla.RoleAgent)
	carl.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	presenceOf(t, carl, "ana", wire.PresenceOnline)
	presenceOf(t, boss, "carl", wire.PresenceOnline)
}
