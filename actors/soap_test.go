package actors_test

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/soapbridge"
	"charla/soapbridge/soapsim"
	"charla/transport/transporttest"
	"charla/wire"
)

// sim is the inventory simulator served over real HTTP for one test.
type sim struct {
	*soapsim.Server
	url string
}

func startSim(t *testing.T) *sim {
	t.Helper()
	s, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close() // releases hanging calls, or hs.Close would wait for them
		hs.Close()
	})
	return &sim{Server: s, url: hs.URL}
}

func (s *sim) faults(t *testing.T, f soapsim.Faults) {
	t.Helper()
	if err := s.SetFaults(f); err != nil {
		t.Fatal(err)
	}
}

func (s *sim) calls(op string) uint64 { return s.Stats().Calls[op] }

// soapEngine runs an engine whose bridge points at s, with cfg edited by
// edit on top of test-friendly settings (short backoff, a breaker that does
// not trip unless the test says so).
func soapEngine(t *testing.T, s *sim, edit func(*actors.SOAPConfig), opts ...transporttest.Option) *transporttest.Engine {
	t.Helper()
	opts = append([]transporttest.Option{transporttest.WithActors(func(c *actors.Config) {
		c.SOAP.URL = s.url
		c.SOAP.BackoffBase, c.SOAP.BackoffMax = 20*time.Millisecond, 50*time.Millisecond
		c.SOAP.Breaker = actors.BreakerConfig{Failures: 1000, Cooldown: time.Second}
		if edit != nil {
			edit(&c.SOAP)
		}
	})}, opts...)
	return transporttest.Start(t, opts...)
}

// answer is the frames a request produced: the immediate answer, or the
// job frames through to the final one.
type answer struct {
	frames []wire.Frame
	took   time.Duration
}

func (a answer) last() wire.Frame { return a.frames[len(a.frames)-1] }

// states lists the job states in order, with attempts ("retrying#2").
func (a answer) states() []string {
	var out []string
	for _, f := range a.frames {
		if f.Type == wire.TypeJob {
			s := f.State
			if f.State == wire.JobRetrying {
				s = fmt.Sprintf("%s#%d", s, f.Attempt)
			}
			out = append(out, s)
		}
	}
	return out
}

// request sends f (with a fresh ref) and reads until its final answer: an
// inventory, reserved or error frame with its ref, or a job frame of its
// job in a final state.
func request(t *testing.T, c *transporttest.Client, f wire.Frame, timeout time.Duration) answer {
	t.Helper()
	f.Ref = uuid.NewString()
	start := time.Now()
	c.Send(f)
	var a answer
	var jobID string
	deadline := time.Now().Add(timeout)
	for {
		g := c.Next(time.Until(deadline))
		switch {
		case g.Ref == f.Ref && g.Type != wire.TypeJob:
			a.frames = append(a.frames, g)
			a.took = time.Since(start)
			return a
		case g.Type == wire.TypeJob && g.Ref == f.Ref:
			jobID = g.JobID
			a.frames = append(a.frames, g)
			if g.State == wire.JobDone || g.State == wire.JobFailed {
				a.took = time.Since(start) // a job request's answer
				return a
			}
		case g.Type == wire.TypeJob && g.JobID == jobID && jobID != "":
			a.frames = append(a.frames, g)
			if g.State == wire.JobDone || g.State == wire.JobFailed {
				a.took = time.Since(start)
				return a
			}
		}
	}
}

func inventory(sku string) wire.Frame { return wire.Frame{Type: wire.TypeInventory, SKU: sku} }

// item is the item an answer carries: an inventory frame's, or a done job's
// result.
func item(t *testing.T, a answer) (soapbridge.Item, bool) {
	t.Helper()
	f := a.last()
	switch {
	case f.Type == wire.TypeInventory && f.Item != nil:
		return *f.Item, f.Stale
	case f.Type == wire.TypeJob && f.State == wire.JobDone:
		g, err := wire.Decode(append([]byte(`{"type":"inventory",`), f.Result[1:]...))
		if err != nil || g.Item == nil {
			t.Fatalf("job result %s: %v", f.Result, err)
		}
		return *g.Item, g.Stale
	}
	t.Fatalf("no item in %+v", a.frames)
	return soapbridge.Item{}, false
}

// The normal path: an answer, a cache hit within the TTL (the simulator is
// not asked), a miss after it, an invalidation by ReserveItem and by an
// admin, and one call for many identical requests at once.
func TestInventoryNormalPath(t *testing.T) {
	s := startSim(t)
	const ttl = 500 * time.Millisecond
	e := soapEngine(t, s, func(c *actors.SOAPConfig) { c.CacheTTL = ttl })
	agent := e.Dial(t, "agent1", charla.RoleAgent)

	// A SKU with stock to reserve.
	var sku string
	for _, it := range soapsim.Generate(1, soapsim.DefaultCatalogueSize) {
		if it.Quantity >= 5 {
			sku = it.SKU
			break
		}
	}
	first := request(t, agent, inventory(sku), transporttest.Wait)
	it, stale := item(t, first)
	if it.SKU != sku || stale || s.calls(soapbridge.OpGetStock) != 1 {
		t.Fatalf("first answer %+v (stale %v), %d calls", first.frames, stale, s.calls(soapbridge.OpGetStock))
	}
	hit := request(t, agent, inventory(sku), transporttest.Wait)
	if _, stale := item(t, hit); stale || s.calls(soapbridge.OpGetStock) != 1 {
		t.Fatalf("second answer within the TTL: %+v, %d calls (want a cache hit)", hit.frames, s.calls(soapbridge.OpGetStock))
	}
	if st := e.Sys.InventoryCache().Stats(); st.Hits != 1 {
		t.Errorf("cache hits = %d, want 1", st.Hits)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	request(t, agent, inventory(sku), transporttest.Wait)
	if n := s.calls(soapbridge.OpGetStock); n != 2 {
		t.Fatalf("after the TTL: %d calls, want 2 (a miss)", n)
	}

	// A reservation changes the stock: the SKU is invalidated, and the next
	// lookup asks the service and sees the new quantity.
	res := request(t, agent, wire.Frame{Type: wire.TypeReserve, SKU: sku, Quantity: 2, ReservationID: "r-1"}, transporttest.Wait)
	if f := res.last(); f.Type != wire.TypeReserved || f.Reservation == nil || f.Reservation.Remaining != it.Quantity-2 || f.Reservation.ReservationID != "r-1" {
		t.Fatalf("reserve answered %+v", res.frames)
	}
	after := request(t, agent, inventory(sku), transporttest.Wait)
	if got, _ := item(t, after); got.Quantity != it.Quantity-2 || s.calls(soapbridge.OpGetStock) != 3 {
		t.Fatalf("after reserve: quantity %d (want %d), %d calls (want 3)", got.Quantity, it.Quantity-2, s.calls(soapbridge.OpGetStock))
	}
	customer := e.Dial(t, "cust1", charla.RoleCustomer)
	if f := request(t, customer, wire.Frame{Type: wire.TypeReserve, SKU: sku, Quantity: 1}, transporttest.Wait).last(); f.Code != charla.CodeForbidden {
		t.Errorf("customer reserve: %+v, want forbidden", f)
	}
	if f := request(t, agent, wire.Frame{Type: wire.TypeInvalidate, SKU: sku}, transporttest.Wait).last(); f.Code != charla.CodeForbidden {
		t.Errorf("agent invalidate: %+v, want forbidden", f)
	}
	admin := e.Dial(t, "admin1", charla.RoleAdmin)
	if f := request(t, admin, wire.Frame{Type: wire.TypeInvalidate, SKU: sku}, transporttest.Wait).last(); f.Type != wire.TypeInvalidated {
		t.Errorf("admin invalidate: %+v", f)
	}
	request(t, agent, inventory(sku), transporttest.Wait)
	if n := s.calls(soapbridge.OpGetStock); n != 4 {
		t.Errorf("after an admin invalidation: %d calls, want 4", n)
	}

	// Identical concurrent requests coalesce into one call.
	s.faults(t, soapsim.Faults{FaultSet: soapsim.FaultSet{LatencyMS: 200}})
	before := s.calls(soapbridge.OpGetStock)
	const n = 10
	clients := make([]*transporttest.Client, n)
	for i := range clients {
		clients[i] = e.Dial(t, fmt.Sprintf("c%d", i), charla.RoleCustomer)
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			if got, _ := item(t, request(t, c, inventory("SKU-00050"), transporttest.Wait)); got.SKU != "SKU-00050" {
				t.Errorf("coalesced answer for %s", got.SKU)
			}
		})
	}
	wg.Wait()
	if got := s.calls(soapbridge.OpGetStock) - before; got != 1 {
		t.Errorf("%d identical concurrent requests made %d calls, want 1", n, got)
	}
	if c := e.Sys.Stats().SOAP.Coalesced.Load(); c != n-1 {
		t.Errorf("coalesced = %d, want %d", c, n-1)
	}
}

// Failures: only retryable ones are retried, each attempt within its
// deadline, and the client sees the job's progress in order.
func TestInventoryFailuresAndRetries(t *testing.T) {
	const timeout = 300 * time.Millisecond
	slow := soapsim.FaultSet{LatencyMS: 150} // past the answer budget: the request becomes a job
	tests := []struct {
		name    string
		faults  soapsim.FaultSet
		sku     string
		calls   uint64
		code    charla.Code
		message string
		states  []string
		within  time.Duration
	}{
		{name: "server fault is retried", faults: soapsim.FaultSet{LatencyMS: slow.LatencyMS, SOAPFault: 1}, sku: "SKU-00011", calls: 3,
			code: charla.CodeUnavailable, message: "SOAP fault", states: []string{"queued", "running", "retrying#2", "retrying#3", "failed"}},
		{name: "HTTP 500 is retried", faults: soapsim.FaultSet{LatencyMS: slow.LatencyMS, HTTP500: 1}, sku: "SKU-00012", calls: 3,
			code: charla.CodeUnavailable, message: "HTTP 500", states: []string{"queued", "running", "retrying#2", "retrying#3", "failed"}},
		{name: "hang times out per attempt", faults: soapsim.FaultSet{Hang: 1}, sku: "SKU-00013", calls: 3,
			code: charla.CodeUnavailable, message: "in time", states: []string{"queued", "running", "retrying#2", "retrying#3", "failed"},
			within: 3*timeout + 2*50*time.Millisecond},
		{name: "client fault is not retried", faults: slow, sku: "NO-SUCH-SKU", calls: 1,
			code: charla.CodeNotFound, message: "no such SKU"},
		{name: "reset is retried", faults: soapsim.FaultSet{Reset: 1}, sku: "SKU-00014", calls: 3,
			code: charla.CodeUnavailable, message: "unreachable"},
	}
	s := startSim(t)
	e := soapEngine(t, s, func(c *actors.SOAPConfig) {
		c.Retries = 2
		c.GetStockTimeout = timeout
		c.AnswerBudget = 100 * time.Millisecond
	})
	c := e.Dial(t, "agent", charla.RoleAgent)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.faults(t, soapsim.Faults{FaultSet: tc.faults})
			before := s.calls(soapbridge.OpGetStock)
			a := request(t, c, inventory(tc.sku), transporttest.Wait)
			f := a.last()
			code, msg := f.Code, f.Message
			if f.Type == wire.TypeJob && f.JobError != nil {
				code, msg = f.JobError.Code, f.JobError.Message
			}
			if code != tc.code || !strings.Contains(msg, tc.message) {
				t.Errorf("answer %+v; want %s containing %q", f, tc.code, tc.message)
			}
			if tc.states != nil && !slices.Equal(a.states(), tc.states) {
				t.Errorf("job states %v, want %v", a.states(), tc.states)
			}
			if got := s.calls(soapbridge.OpGetStock) - before; got != tc.calls {
				t.Errorf("%d calls reached the service, want %d", got, tc.calls)
			}
			if tc.within > 0 && a.took > tc.within+time.Second {
				t.Errorf("took %s, want within %s plus a 1s margin", a.took, tc.within)
			}
			t.Logf("%s: %v in %s", tc.name, a.states(), a.took.Round(time.Millisecond))
		})
	}
}

// Malformed XML, a SOAP fault and an oversized answer each become a clear
// error frame; the first and the last are not retried.
func TestInventoryBadAnswers(t *testing.T) {
	tests := []struct {
		name    string
		faults  soapsim.FaultSet
		message string
		calls   uint64
	}{
		{"malformed XML", soapsim.FaultSet{Malformed: 1}, "malformed", 1},
		{"SOAP fault", soapsim.FaultSet{SOAPFault: 1}, "SOAP fault", 1},
		{"oversized", soapsim.FaultSet{Oversized: 1}, "too large", 1},
	}
	s := startSim(t)
	e := soapEngine(t, s, func(c *actors.SOAPConfig) { c.Retries = 0 })
	c := e.Dial(t, "agent", charla.RoleAgent)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.faults(t, soapsim.Faults{FaultSet: tc.faults})
			before := s.calls(soapbridge.OpGetStock)
			f := request(t, c, inventory(soapsim.SKU(100+i)), transporttest.Wait).last()
			if f.Type != wire.TypeError || f.Code != charla.CodeUnavailable || !strings.Contains(f.Message, tc.message) {
				t.Errorf("answer %+v, want an unavailable error saying %q", f, tc.message)
			}
			if got := s.calls(soapbridge.OpGetStock) - before; got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
		})
	}
}

// sendAckP99 measures send→ack latency over n sequential sends.
func sendAckP99(t *testing.T, c *transporttest.Client, conv charla.ConvID, n int) time.Duration {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	for range n {
		id := uuid.NewString()
		start := time.Now()
		c.Send(transporttest.SendFrame(conv, id, "hi", id))
		for {
			f := c.Next(transporttest.Wait)
			if f.Ref == id {
				if f.Type != wire.TypeAck {
					t.Fatalf("send answered %+v", f)
				}
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100]
}

// A hanging service holds at most max-inflight calls; the queue behind them
// is bounded and overflow is refused at once; and chat is not slowed.
func TestInventoryBulkheadKeepsChatFast(t *testing.T) {
	const inflight, queue = 4, 4
	s := startSim(t)
	e := soapEngine(t, s, func(c *actors.SOAPConfig) {
		c.MaxInflight, c.Queue = inflight, queue
		c.Retries = 0
		c.GetStockTimeout = 20 * time.Second
		c.AnswerBudget = 100 * time.Millisecond
	})
	chat := e.Dial(t, "chatter", charla.RoleAgent)
	sendAckP99(t, chat, "warmup", 20)
	base := sendAckP99(t, chat, "base", 300)

	s.faults(t, soapsim.Faults{FaultSet: soapsim.FaultSet{Hang: 1}})
	asker := e.Dial(t, "asker", charla.RoleAgent)
	const asks = inflight + queue + 4
	refs := map[string]int{}
	start := time.Now()
	for i := range asks {
		f := inventory(soapsim.SKU(200 + i))
		f.Ref = fmt.Sprint(i)
		refs[f.Ref] = i
		asker.Send(f)
	}
	var refused []int
	jobs := 0
	for len(refused)+jobs < asks {
		f := asker.Next(transporttest.Wait)
		switch {
		case f.Type == wire.TypeError && f.Code == charla.CodeUnavailable:
			if f.RetryAfter <= 0 {
				t.Errorf("refusal without retry_after_ms: %+v", f)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("refusal took %s, want at once", took)
			}
			refused = append(refused, refs[f.Ref])
		case f.Type == wire.TypeJob && f.State == wire.JobQueued:
			jobs++
		}
	}
	if len(refused) != asks-inflight-queue {
		t.Errorf("%d refused, want %d", len(refused), asks-inflight-queue)
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.calls(soapbridge.OpGetStock); n != inflight {
		t.Errorf("%d calls reached the hanging service, want max-inflight = %d", n, inflight)
	}
	hanging := sendAckP99(t, chat, "hang", 300)
	limit := max(2*base, base+50*time.Millisecond)
	t.Logf("chat send→ack p99: %s without SOAP, %s with a hanging service (limit %s)", base, hanging, limit)
	if hanging > limit {
		t.Errorf("chat p99 %s while SOAP hangs, want within %s", hanging, limit)
	}
	if n := s.calls(soapbridge.OpGetStock); n != inflight {
		t.Errorf("%d calls reached the hanging service, want %d", n, inflight)
	}
}

// The breaker opens after the threshold (no call reaches the service while
// open), cached SKUs are answered stale meanwhile, it half-opens after the
// cool-down, and it closes soon after the service recovers.
func TestInventoryBreaker(t *testing.T) {
	const cooldown = time.Second
	s := startSim(t)
	e := soapEngine(t, s, func(c *actors.SOAPConfig) {
		c.Retries = 0
		c.CacheTTL = 200 * time.Millisecond
		c.Breaker = actors.BreakerConfig{Failures: 3, Cooldown: cooldown}
	})
	c := e.Dial(t, "agent", charla.RoleAgent)
	const cached = 5
	for i := range cached {
		item(t, request(t, c, inventory(soapsim.SKU(i+1)), transporttest.Wait))
	}
	time.Sleep(250 * time.Millisecond) // past the TTL: only last known values remain

	s.faults(t, soapsim.Faults{FaultSet: soapsim.FaultSet{HTTP500: 1}})
	for i := range 3 {
		if f := request(t, c, inventory(soapsim.SKU(500+i)), transporttest.Wait).last(); f.Code != charla.CodeUnavailable {
			t.Fatalf("failing call answered %+v", f)
		}
	}
	opened := time.Now()
	if st := e.Sys.SOAPState(); st != "open" {
		t.Fatalf("breaker %s after 3 failures, want open", st)
	}
	calls := s.calls(soapbridge.OpGetStock)
	stale, total := 0, 0
	for time.Since(opened) < cooldown/2 {
		a := request(t, c, inventory(soapsim.SKU(total%cached+1)), transporttest.Wait)
		total++
		if f := a.last(); f.Type == wire.TypeInventory && f.Stale {
			stale++
		}
	}
	if f := request(t, c, inventory("SKU-09999"), transporttest.Wait).last(); f.Code != charla.CodeUnavailable || f.RetryAfter <= 0 {
		t.Errorf("uncached SKU while open: %+v, want unavailable with retry_after_ms", f)
	}
	if got := s.calls(soapbridge.OpGetStock); got != calls {
		t.Errorf("%d calls reached the service while the breaker was open", got-calls)
	}
	t.Logf("during the outage: %d of %d requests for cached SKUs answered stale", stale, total)
	if stale*100 < total*95 {
		t.Errorf("%d of %d answered stale, want at least 95%%", stale, total)
	}

	// After the cool-down one probe reaches the (still failing) service and
	// the breaker opens again.
	deadline := time.Now().Add(10 * cooldown)
	for s.calls(soapbridge.OpGetStock) == calls && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.calls(soapbridge.OpGetStock) - calls; got != 1 {
		t.Fatalf("%d probes after the cool-down, want 1", got)
	}
	if took := time.Since(opened); took < cooldown {
		t.Errorf("probe %s after opening, before the cool-down", took)
	}

	s.faults(t, soapsim.Faults{})
	recovered := time.Now()
	for e.Sys.SOAPState() != "closed" && time.Since(recovered) < 30*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(recovered)
	t.Logf("service recovered → breaker closed in %s (cool-down %s)", took.Round(time.Millisecond), cooldown)
	if st := e.Sys.SOAPState(); st != "closed" {
		t.Fatalf("breaker %s 30s after the service recovered", st)
	}
	if f := request(t, c, inventory("SKU-09999"), transporttest.Wait).last(); f.Type != wire.TypeInventory || f.Stale {
		t.Errorf("after recovery: %+v", f)
	}
}

// A panic in the soap actor restarts it; every accepted job still finishes,
// visibly, on every connection of its user, and a reconnecting client can
// ask for its final state.
func TestSOAPActorRestartKeepsJobs(t *testing.T) {
	var armed atomic.Bool
	var panics atomic.Int32
	hook := func(msgType string) {
		if msgType == "actors.callDone" && armed.CompareAndSwap(true, false) {
			panics.Add(1)
			panic("injected by test")
		}
	}
	s := startSim(t)
	s.faults(t, soapsim.Faults{FaultSet: soapsim.FaultSet{LatencyMS: 400}})
	e := soapEngine(t, s, func(c *actors.SOAPConfig) { c.AnswerBudget = 100 * time.Millisecond },
		transporttest.WithSystem(actors.NewSystemWithSOAPHook(hook)))
	asker := e.Dial(t, "alice", charla.RoleAgent)
	other := e.Dial(t, "alice", charla.RoleAgent)

	armed.Store(true)
	const n = 3
	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := range n {
		// One connection, one request at a time is what request reads;
		// several jobs in flight come from several connections.
		c := asker
		if i > 0 {
			c = e.Dial(t, "alice", charla.RoleAgent)
		}
		wg.Go(func() { answers[i] = request(t, c, inventory(soapsim.SKU(300+i)), transporttest.Wait) })
	}
	wg.Wait()
	if panics.Load() != 1 {
		t.Fatal("the hook did not panic")
	}
	seen := map[string]bool{}
	for i, a := range answers {
		f := a.last()
		if f.Type != wire.TypeJob || f.State != wire.JobDone {
			t.Fatalf("job %d ended %+v (states %v)", i, f, a.states())
		}
		if got, _ := item(t, a); got.SKU != soapsim.SKU(300+i) {
			t.Errorf("job %d result is %s", i, got.SKU)
		}
		seen[f.JobID] = true
	}
	// The user's other connection saw every job finish too.
	deadline := time.Now().Add(transporttest.Wait)
	for done := 0; done < n; {
		f := other.Next(time.Until(deadline))
		if f.Type == wire.TypeJob && f.State == wire.JobDone && seen[f.JobID] {
			done++
		}
	}
	// A reconnecting client asks for a job by id and gets its final state;
	// another user cannot see it.
	later := e.Dial(t, "alice", charla.RoleAgent)
	for id := range seen {
		if f := request(t, later, wire.Frame{Type: wire.TypeJob, JobID: id}, transporttest.Wait).last(); f.State != wire.JobDone || f.Result == nil {
			t.Errorf("job %s asked after reconnecting: %+v", id, f)
		}
		mallory := e.Dial(t, "mallory", charla.RoleAgent)
		if f := request(t, mallory, wire.Frame{Type: wire.TypeJob, JobID: id}, transporttest.Wait).last(); f.Code != charla.CodeNotFound {
			t.Errorf("another user asked for job %s: %+v", id, f)
		}
		break
	}
	if active, _ := e.Sys.Jobs(); active != 0 {
		t.Errorf("%d jobs still unfinished", active)
	}
}

// With no --soap-url the bridge is off: inventory answers unavailable.
func TestInventoryOff(t *testing.T) {
	e := transporttest.Start(t)
	c := e.Dial(t, "a", charla.RoleAgent)
	if f := request(t, c, inventory("SKU-00001"), transporttest.Wait).last(); f.Code != charla.CodeUnavailable {
		t.Errorf("inventory with the bridge off: %+v", f)
	}
	if st := e.Sys.SOAPState(); st != "off" {
		t.Errorf("SOAPState = %q, want off", st)
	}
}
