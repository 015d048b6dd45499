package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"charla"
	"charla/bench/client"
	"charla/bench/fleet"
	"charla/bench/stats"
	"charla/soapbridge/soapsim"
	"charla/wire"
)

// The inventory scenario (issue 10) measures the engine's SOAP bridge
// against the simulator the engine's --soap-url points at, in four phases,
// with chat (steady's load) and inventory requests arriving throughout:
//
//   - healthy: the service answers at once; the Zipf mix over the
//     catalogue shows the cache's hit rate with the engine's TTL, and chat's
//     latency is the baseline;
//   - slow: every call takes --soap-latency (200 ms); the answers' p50/p99;
//   - hang: every call hangs; chat's latency against the baseline (the
//     bridge must not slow chat), until the breaker opens;
//   - recovery: faults cleared; the time until /readyz says the breaker
//     closed.
//
// The simulator counts the GetStock calls it received, which is how the hit
// rate is measured without trusting the engine's own counters: hit rate =
// 1 − calls / requests over the phase.

// invDefaults fill inventory's own knobs.
const (
	defaultZipfS       = 1.1
	defaultSOAPLatency = 200 * time.Millisecond
	// defaultBreakerWait covers the engine's defaults: 10 s for the hanging
	// calls to time out and trip the breaker, 30 s of cool-down before it
	// probes.
	defaultBreakerWait = 90 * time.Second
	// readyPoll is how often /readyz is asked while waiting on the breaker:
	// the recovery figure is exact to about this much.
	readyPoll = 50 * time.Millisecond
	// catalogueSize is soapsim's generated catalogue, SKU-00001…SKU-10000.
	catalogueSize = soapsim.DefaultCatalogueSize
)

// invPhase is one phase's inventory and chat figures. A request counts in
// the phase it was sent in, whenever its answer comes.
type invPhase struct {
	name string
	// lat is request → inventory frame, or → the job's done frame.
	lat *stats.Latency
	// chat receives the fleet's chat latencies while the phase runs.
	chat *fleet.Phase

	requests  atomic.Int64 // sent
	answered  atomic.Int64 // an item came (inventory frame or job done)
	immediate atomic.Int64 // ... as an inventory frame, within the answer budget
	jobs      atomic.Int64 // became jobs
	stale     atomic.Int64 // answered with stale:true
	refused   atomic.Int64 // error unavailable with retry_after_ms (bulkhead, breaker)
	failed    atomic.Int64 // any other error frame or failed job

	mu    sync.Mutex
	codes map[string]int64 // failures by code, for the result

	// GetStock calls the simulator counted at the phase's start and end.
	callsBefore, callsAfter uint64
	took                    time.Duration
}

func newInvPhase(name string, start time.Time) *invPhase {
	return &invPhase{name: name, lat: stats.NewLatency(start), codes: map[string]int64{},
		chat: &fleet.Phase{SendAck: stats.NewHistogram(), SendDeliver: stats.NewHistogram()}}
}

func (p *invPhase) fail(code string) {
	p.failed.Add(1)
	p.mu.Lock()
	p.codes[code]++
	p.mu.Unlock()
}

// hitRate is 1 − GetStock calls / requests (0 when nothing was asked).
func (p *invPhase) hitRate() float64 {
	n := p.requests.Load()
	if n == 0 {
		return 0
	}
	return 1 - float64(p.callsAfter-p.callsBefore)/float64(n)
}

// invReq is a request awaiting its final answer.
type invReq struct {
	at time.Time
	ph *invPhase
}

// invTracker matches answers to requests: by ref for inventory and error
// frames and a job's first frame, by job id for the job's later frames.
type invTracker struct {
	mu      sync.Mutex
	pending map[string]invReq // by ref
	jobs    map[string]invReq // by job id
	next    atomic.Uint64
	ph      atomic.Pointer[invPhase]
}

func newInvTracker() *invTracker {
	return &invTracker{pending: map[string]invReq{}, jobs: map[string]invReq{}}
}

// outstanding is how many requests have no final answer yet.
func (t *invTracker) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) + len(t.jobs)
}

func (t *invTracker) take(ref string) (invReq, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	req, ok := t.pending[ref]
	delete(t.pending, ref)
	return req, ok
}

// frame is the fleet's frame hook: it consumes the inventory frames, the
// job frames, and the error frames that answer an inventory request.
func (t *invTracker) frame(_ *fleet.Member, f *wire.Frame, at time.Time) bool {
	switch f.Type {
	case wire.TypeInventory:
		if req, ok := t.take(f.Ref); ok {
			req.ph.lat.Record(at, at.Sub(req.at))
			req.ph.answered.Add(1)
			req.ph.immediate.Add(1)
			if f.Stale {
				req.ph.stale.Add(1)
			}
		}
		return true
	case wire.TypeJob:
		t.mu.Lock()
		if req, ok := t.pending[f.Ref]; ok && f.Ref != "" {
			delete(t.pending, f.Ref)
			t.jobs[f.JobID] = req
			req.ph.jobs.Add(1)
		}
		req, ok := t.jobs[f.JobID]
		final := f.State == wire.JobDone || f.State == wire.JobFailed
		if ok && final {
			delete(t.jobs, f.JobID)
		}
		t.mu.Unlock()
		if !ok || !final {
			return true
		}
		if f.State == wire.JobFailed {
			code := "failed"
			if f.JobError != nil {
				code = string(f.JobError.Code)
			}
			req.ph.fail("job " + code)
			return true
		}
		var res struct {
			Stale bool `json:"stale"`
		}
		_ = json.Unmarshal(f.Result, &res)
		req.ph.lat.Record(at, at.Sub(req.at))
		req.ph.answered.Add(1)
		if res.Stale {
			req.ph.stale.Add(1)
		}
		return true
	case wire.TypeError:
		req, ok := t.take(f.Ref)
		if !ok {
			return false // a chat error: the fleet's
		}
		if f.Code == charla.CodeUnavailable && f.RetryAfter > 0 {
			req.ph.refused.Add(1)
		} else {
			req.ph.fail(string(f.Code))
		}
		return true
	}
	return false
}

// pace sends rate inventory requests per second in total, round-robin over
// members, SKUs drawn from a Zipf picker, for d or until ctx ends. Like
// fleet.Pace it is open-loop with a quarter second's burst at most; what a
// stalled sender misses is skipped, not queued.
func (t *invTracker) pace(ctx context.Context, ms []*fleet.Member, pick *soapsim.ZipfPicker, rate float64, d time.Duration, onErr func(error)) {
	if rate <= 0 || len(ms) == 0 || d <= 0 {
		return
	}
	start := time.Now()
	end := start.Add(d)
	burst := int64(rate/4) + 1
	var done int64
	maxIter := int(d/(100*time.Microsecond)) + 1000
	for iter, next := 0, 0; iter < maxIter; iter++ {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return
		}
		due := int64(rate*now.Sub(start).Seconds()) - done
		if due > burst {
			done += due - burst
			due = burst
		}
		for ; due > 0; due-- {
			done++
			m := ms[next%len(ms)]
			next++
			c := m.Conn()
			if c == nil || !m.Connected() {
				continue
			}
			ph := t.ph.Load()
			ref := "inv" + strconv.FormatUint(t.next.Add(1), 10)
			t.mu.Lock()
			t.pending[ref] = invReq{at: time.Now(), ph: ph}
			t.mu.Unlock()
			ph.requests.Add(1)
			if err := c.Inventory(pick.Next(), ref); err != nil {
				t.take(ref)
				ph.requests.Add(-1)
				onErr(err)
			}
		}
		wait := time.Until(start.Add(time.Duration(float64(done+1) / rate * float64(time.Second))))
		wait = min(max(wait, 50*time.Microsecond), 10*time.Millisecond)
		tm := time.NewTimer(wait)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return
		}
	}
}

// simAdmin is the simulator's admin API.
type simAdmin struct {
	base string
	hc   *http.Client
}

func newSimAdmin(base string) (*simAdmin, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--soap-admin %q: want the simulator's base URL, e.g. http://127.0.0.1:8081", base)
	}
	return &simAdmin{base: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: 5 * time.Second}}, nil
}

func (s *simAdmin) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return fmt.Errorf("simulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("simulator %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("simulator %s %s: %w", method, path, err)
		}
	}
	return nil
}

func (s *simAdmin) setFaults(ctx context.Context, f soapsim.Faults) error {
	return s.do(ctx, http.MethodPut, "/admin/faults", f, nil)
}

func (s *simAdmin) clearFaults(ctx context.Context) error {
	return s.do(ctx, http.MethodDelete, "/admin/faults", nil, nil)
}

func (s *simAdmin) getStockCalls(ctx context.Context) (uint64, error) {
	var st soapsim.Stats
	if err := s.do(ctx, http.MethodGet, "/admin/stats", nil, &st); err != nil {
		return 0, err
	}
	return st.Calls["GetStock"], nil
}

// soapState reads the engine's SOAP breaker from /readyz as an admin (dev
// auth's query, or a minted admin JWT): closed, open, half_open, or off.
func (r *run) soapState(ctx context.Context, hc *http.Client) (string, error) {
	u := "http://" + r.o.Addr + "/readyz"
	if r.o.Secret == "" {
		u += "?" + url.Values{"user": {r.o.RunID + "-ops"}, "role": {string(charla.RoleAdmin)}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	if r.o.Secret != "" {
		tok, err := client.Token(r.o.Secret, r.o.RunID+"-ops", charla.RoleAdmin, time.Hour)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("readyz: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		SOAP string `json:"soap"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
		return "", fmt.Errorf("readyz: %w", err)
	}
	if body.SOAP == "" {
		return "", errors.New("readyz gave no details: the bench must be allowed to read them as an admin")
	}
	return body.SOAP, nil
}

// awaitSOAP polls /readyz until the breaker is in state want or wait
// passes; it returns how long that took and whether it happened.
func (r *run) awaitSOAP(ctx context.Context, hc *http.Client, want string, wait time.Duration) (time.Duration, bool) {
	start := time.Now()
	lastLog := start
	for i := 0; i < int(wait/readyPoll)+1; i++ {
		st, err := r.soapState(ctx, hc)
		if err == nil && st == want {
			return time.Since(start), true
		}
		if time.Since(start) >= wait || ctx.Err() != nil {
			break
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			fmt.Fprintf(r.env.Log, "%s: waiting for the SOAP breaker to be %s: %s after %.0fs (%v)\n", r.res.Scenario, want, st, time.Since(start).Seconds(), err)
		}
		time.Sleep(readyPoll)
	}
	return time.Since(start), false
}

func runInventory(ctx context.Context, o Options, _ Env, r *run) error {
	if o.SOAPAdmin == "" {
		return errors.New("--soap-admin is required: the simulator's base URL (the engine runs with --soap-url at it)")
	}
	sim, err := newSimAdmin(o.SOAPAdmin)
	if err != nil {
		return err
	}
	if o.InventoryRate <= 0 {
		return errors.New("--inv-rate must be > 0")
	}
	zs := o.ZipfS
	if zs == 0 {
		zs = defaultZipfS
	}
	pick, err := soapsim.NewZipfPicker(1, catalogueSize, zs)
	if err != nil {
		return fmt.Errorf("--zipf-s: %w", err)
	}
	slowBy := o.SOAPLatency
	if slowBy <= 0 {
		slowBy = defaultSOAPLatency
	}
	wait := o.BreakerWait
	if wait <= 0 {
		wait = defaultBreakerWait
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	// The faults are the simulator's, shared with whoever uses it next:
	// they are cleared whatever happens to the run.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sim.clearFaults(cctx); err != nil {
			fmt.Fprintf(r.env.Log, "%s: clearing the simulator's faults: %v\n", r.res.Scenario, err)
		}
	}()
	if err := sim.clearFaults(ctx); err != nil {
		return err
	}
	if st, err := r.soapState(ctx, hc); err != nil {
		return err
	} else if st == "off" {
		return errors.New("the engine has no --soap-url: start it with --soap-url at the simulator")
	}

	t := newInvTracker()
	r.frame = t.frame
	if err := r.start(false, 0); err != nil {
		return err
	}
	r.memBefore(ctx)
	ms := r.newMembers(o.Conns, o.Convs, 0)
	n := r.connect(ctx, ms)
	if err := r.needAll(n, o.Conns); err != nil {
		return err
	}
	if err := r.subscribe(ctx, ms); err != nil {
		return err
	}

	base := time.Now()
	phases := map[string]*invPhase{}
	var order []*invPhase
	// phase runs chat and inventory load for d, or, when until is given,
	// until it returns (it gets a context that ends with the load).
	phase := func(name string, faults *soapsim.Faults, d time.Duration, until func(context.Context)) (*invPhase, error) {
		ph := newInvPhase(name, base)
		phases[name], order = ph, append(order, ph)
		if faults != nil {
			if err := sim.setFaults(ctx, *faults); err != nil {
				return ph, err
			}
		} else if err := sim.clearFaults(ctx); err != nil {
			return ph, err
		}
		calls, err := sim.getStockCalls(ctx)
		if err != nil {
			return ph, err
		}
		ph.callsBefore = calls
		t.ph.Store(ph)
		r.f.SetPhase(ph.chat)
		r.rep.SetPhase(name)
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		start := time.Now()
		wg.Go(func() { r.f.Pace(lctx, ms, o.Rate, d, o.Workers) })
		wg.Go(func() {
			t.pace(lctx, ms, pick, o.InventoryRate, d, func(err error) { r.f.Error("inventory send", err) })
		})
		if until != nil {
			until(lctx)
			cancel()
		}
		wg.Wait()
		cancel()
		ph.took = time.Since(start)
		r.measured += ph.took
		if ph.callsAfter, err = sim.getStockCalls(ctx); err != nil {
			return ph, err
		}
		fmt.Fprintf(r.env.Log, "%s: phase %s: %.1fs, %d requests, %d answered (%d at once, %d jobs, %d stale), %d refused, %d failed, %d GetStock calls\n",
			r.res.Scenario, name, ph.took.Seconds(), ph.requests.Load(), ph.answered.Load(), ph.immediate.Load(), ph.jobs.Load(),
			ph.stale.Load(), ph.refused.Load(), ph.failed.Load(), ph.callsAfter-ph.callsBefore)
		return ph, nil
	}

	res := r.res
	d := o.Duration
	if _, err := phase("healthy", nil, d/2, nil); err != nil {
		return err
	}
	slow := soapsim.Faults{FaultSet: soapsim.FaultSet{LatencyMS: int(slowBy / time.Millisecond), LatencyProbability: 1}}
	if _, err := phase("slow", &slow, d/4, nil); err != nil {
		return err
	}
	// The hang phase lasts at least d/4 and until the breaker opened (the
	// hanging calls must time out first), so that recovery starts from an
	// open breaker.
	var toOpen time.Duration
	opened := false
	hang := soapsim.Faults{FaultSet: soapsim.FaultSet{Hang: 1}}
	if _, err := phase("hang", &hang, d/4+wait, func(lctx context.Context) {
		toOpen, opened = r.awaitSOAP(lctx, hc, "open", wait)
		if rest := d/4 - toOpen; rest > 0 {
			tm := time.NewTimer(rest)
			select {
			case <-tm.C:
			case <-lctx.Done():
			}
			tm.Stop()
		}
	}); err != nil {
		return err
	}
	var toClosed time.Duration
	closed := false
	if _, err := phase("recovery", nil, wait, func(lctx context.Context) {
		toClosed, closed = r.awaitSOAP(lctx, hc, "closed", wait)
	}); err != nil {
		return err
	}
	r.f.SetPhase(nil)

	// Drain: every chat message acked and delivered, every inventory
	// request answered (jobs end done or failed, by the protocol).
	r.drain(ctx, ms)
	r.rep.SetPhase("drain inventory")
	deadline := time.Now().Add(r.o.Drain)
	for i := 0; i < int(r.o.Drain/(50*time.Millisecond))+1 && t.outstanding() > 0 && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	r.memAfter(ctx, 0)

	r.finishLatencies()
	var requests, answered int64
	codes := map[string]int64{}
	for _, ph := range order {
		res.AddLatency("inventory_"+ph.name, ph.lat)
		res.LatencyMS["send_ack_"+ph.name] = ph.chat.SendAck.Summary()
		requests += ph.requests.Load()
		answered += ph.answered.Load()
		k := func(s string) string { return "inventory_" + ph.name + "_" + s }
		res.Details[k("requests")] = float64(ph.requests.Load())
		res.Details[k("answered")] = float64(ph.answered.Load())
		res.Details[k("answered_at_once")] = float64(ph.immediate.Load())
		res.Details[k("jobs")] = float64(ph.jobs.Load())
		res.Details[k("stale")] = float64(ph.stale.Load())
		res.Details[k("refused_retry_after")] = float64(ph.refused.Load())
		res.Details[k("failed")] = float64(ph.failed.Load())
		res.Details[k("getstock_calls")] = float64(ph.callsAfter - ph.callsBefore)
		res.Details[k("hit_rate")] = ph.hitRate()
		res.Details[k("seconds")] = ph.took.Seconds()
		res.Details["chat_send_ack_p99_ms_"+ph.name] = ph.chat.SendAck.Summary().P99
		ph.mu.Lock()
		for c, n := range ph.codes {
			codes[c] += n
		}
		ph.mu.Unlock()
	}
	res.Details["inventory_requests"] = float64(requests)
	res.Details["inventory_answered"] = float64(answered)
	res.Details["inventory_unanswered"] = float64(t.outstanding())
	res.Details["zipf_s"] = zs
	res.Details["soap_latency_ms"] = float64(slowBy / time.Millisecond)
	res.Details["hang_to_breaker_open_s"] = toOpen.Seconds()
	res.Details["recovery_to_breaker_closed_s"] = toClosed.Seconds()
	if h := phases["healthy"]; h != nil {
		res.Details["hit_rate"] = h.hitRate()
	}
	if s := phases["slow"]; s != nil {
		sum := s.lat.Hist.Summary()
		res.Details["inventory_slow_p50_ms"], res.Details["inventory_slow_p99_ms"] = sum.P50, sum.P99
	}
	base99 := phases["healthy"].chat.SendAck.Summary().P99
	hang99 := phases["hang"].chat.SendAck.Summary().P99
	if base99 > 0 {
		res.Details["chat_p99_hang_over_healthy"] = hang99 / base99
		res.AddGoal("chat send→ack p99, SOAP hanging / healthy", "x", 2, hang99/base99, true)
	}
	if !opened {
		res.Fail("the SOAP breaker did not open within %v of the service hanging", wait)
	}
	if !closed {
		res.Fail("the SOAP breaker did not close within %v of the service recovering", wait)
	}
	if n := t.outstanding(); n > 0 {
		res.Fail("%d inventory requests never got a final answer (drain %v)", n, r.o.Drain)
	}
	if len(codes) > 0 {
		keys := make([]string, 0, len(codes))
		for c := range codes {
			keys = append(keys, c)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, c := range keys {
			res.Details["inventory_failed_"+strings.ReplaceAll(c, " ", "_")] = float64(codes[c])
			// unavailable is the service failing, which this run causes on
			// purpose; any other code is the engine or the bench at fault.
			if !strings.HasSuffix(c, string(charla.CodeUnavailable)) {
				fmt.Fprintf(&b, "%d× %s; ", codes[c], c)
			}
		}
		if b.Len() > 0 {
			res.Fail("inventory requests failed: %s", strings.TrimSuffix(b.String(), "; "))
		}
	}
	return nil
}
