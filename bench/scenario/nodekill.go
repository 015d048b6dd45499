package scenario

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"charla"
	"charla/bench/clusterstate"
	"charla/bench/fleet"
	"charla/bench/result"
	"charla/bench/stats"
	"charla/wire"
)

// The failover aim of docs/CLUSTER.md: a conversation whose owner was
// SIGKILLed is writable again within 5 s with a 3 s lease TTL.
const failoverGoal = 5 * time.Second

// node-kill's bounds besides its options.
const (
	ownerWait      = 60 * time.Second // for the victim to own one of the run's conversations
	refusedResend  = 100 * time.Millisecond
	victim         = 0 // node 1 is killed every round; clients are on the others
	maxKillRounds  = 100
	roundAfterKill = 30 * time.Second // FailoverWait's default
)

// failoverClock records, per conversation, the first ack of a message
// first sent after the kill.
type failoverClock struct {
	mu     sync.Mutex
	killAt time.Time
	first  map[charla.ConvID]time.Time
}

func (c *failoverClock) arm(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killAt, c.first = at, map[charla.ConvID]time.Time{}
}

func (c *failoverClock) ack(_ *fleet.Member, f *wire.Frame, firstSent, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil || !firstSent.After(c.killAt) {
		return
	}
	if _, ok := c.first[f.Conv]; !ok {
		c.first[f.Conv] = at
	}
}

// writable returns when conv was first written after the kill (zero if
// not yet).
func (c *failoverClock) writable(conv charla.ConvID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first[conv]
}

func runNodeKill(ctx context.Context, o Options, env Env, r *run) error {
	cl := env.Cluster
	if cl == nil || len(cl.Nodes) < 2 {
		return errors.New("node-kill needs a cluster the bench starts: --nodes N (at least 2) and an --engine-cmd template with {addr} (or {port}), {i} in --cluster-node-id, and the cluster flags")
	}
	if o.Kills <= 0 || o.Kills > maxKillRounds {
		return fmt.Errorf("--kills %d: want 1..%d", o.Kills, maxKillRounds)
	}
	of, err := clusterstate.Describe(cl)
	if err != nil {
		return err
	}
	if of.NATSURL == "" || of.DatabaseURL == "" {
		return errors.New("node-kill reads the lease bucket and PostgreSQL: the engine command must give --cluster-nats-url and --database-url")
	}
	ids, dbURL := of.NodeIDs, of.DatabaseURL
	leases, err := clusterstate.DialLeases(of.NATSURL, of.Name, of.Shards)
	if err != nil {
		return err
	}
	defer leases.Close()
	failWait := o.FailoverWait
	if failWait <= 0 {
		failWait = roundAfterKill
	}
	resendAfter := o.ResendAfter
	if resendAfter <= 0 {
		resendAfter = 5 * time.Second
	}
	killEvery := o.KillEvery
	if killEvery <= 0 {
		killEvery = o.Duration
	}

	clock := &failoverClock{}
	r.resend, r.ack = true, clock.ack
	r.o.Addrs = cl.Addrs
	if err := r.start(true, 0); err != nil {
		return err
	}
	// While a shard changes owner, sends are refused (unavailable) or not
	// answered in time; the members resend them with the same
	// client_msg_id, and the ledger and PostgreSQL judge the outcome.
	r.tolerated = []string{"send deferred (unavailable)", "send: ", "resend"}
	r.memBefore(ctx)

	convs := make([]charla.ConvID, o.Convs)
	for i := range convs {
		convs[i] = r.conv(i)
	}
	ms := make([]*fleet.Member, o.Conns)
	others := len(cl.Nodes) - 1
	for i := range ms {
		ms[i] = r.f.NewMember(i, convs[i%o.Convs])
		ms[i].Node = 1 + (i+i/o.Convs)%others // never node 1, the one killed
	}
	n := r.connect(ctx, ms)
	if err := r.needAll(n, o.Conns); err != nil {
		return err
	}
	if err := r.subscribe(ctx, ms); err != nil {
		return err
	}

	// The load runs until the rounds are over; the resends until the
	// drain is. Both are bounded by the longest the rounds may take.
	bound := time.Duration(o.Kills)*(ownerWait+killEvery+failWait+2*time.Minute) + o.Drain
	loadCtx, stopLoad := context.WithCancel(ctx)
	resendCtx, stopResend := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { r.f.Pace(loadCtx, ms, o.Rate, bound, o.Workers) })
	var rg sync.WaitGroup
	rg.Go(func() { r.f.ResendLoop(resendCtx, ms, refusedResend, resendAfter, bound) })
	defer func() {
		stopLoad()
		wg.Wait()
		stopResend()
		rg.Wait()
	}()

	failover := stats.NewLatency(start)
	allConvs := stats.NewLatency(start)
	res := r.res
	var roundErr error
	rounds := 0
	for k := 0; k < o.Kills && ctx.Err() == nil; k++ {
		r.rep.SetPhase(fmt.Sprintf("round %d/%d: settle", k+1, o.Kills))
		if _, err := leases.WaitBalanced(ctx, ids, ownerWait); err != nil {
			roundErr = fmt.Errorf("round %d: %w", k+1, err)
			break
		}
		owned, err := waitOwns(ctx, leases, convs, ids[victim], ownerWait)
		if err != nil {
			roundErr = fmt.Errorf("round %d: %w", k+1, err)
			break
		}
		r.rep.SetPhase(fmt.Sprintf("round %d/%d: load", k+1, o.Kills))
		sleepCtx(ctx, killEvery)
		if owned, err = waitOwns(ctx, leases, convs, ids[victim], ownerWait); err != nil {
			roundErr = fmt.Errorf("round %d: %w", k+1, err)
			break
		}
		busy := owned[0]

		r.rep.SetPhase(fmt.Sprintf("round %d/%d: kill", k+1, o.Kills))
		killAt := time.Now()
		clock.arm(killAt)
		if err := cl.Kill(victim, syscall.SIGKILL, 10*time.Second); err != nil {
			roundErr = fmt.Errorf("round %d: kill node %s: %w", k+1, ids[victim], err)
			break
		}
		r.rep.SetPhase(fmt.Sprintf("round %d/%d: failover", k+1, o.Kills))
		var worst time.Duration
		for _, conv := range owned {
			at := waitWritable(ctx, clock, conv, killAt.Add(failWait))
			if at.IsZero() {
				res.Fail("round %d: conversation %s (owned by the killed node %s) not written within %v of the kill", k+1, conv, ids[victim], failWait)
				worst = -1
				break
			}
			d := at.Sub(killAt)
			if conv == busy {
				failover.Record(at, d)
				res.Details[fmt.Sprintf("round%02d_failover_s", k+1)] = d.Seconds()
			}
			worst = max(worst, d)
		}
		if worst > 0 {
			allConvs.Record(killAt.Add(worst), worst)
		}
		newOwner, _ := leases.Owner(ctx, busy)
		fmt.Fprintf(env.Log, "node-kill: round %d: killed %s (owner of %d of %d conversations); %s writable again after %.2fs (now on %s), all of them after %.2fs\n",
			k+1, ids[victim], len(owned), len(convs), busy, clock.writable(busy).Sub(killAt).Seconds(), newOwner, worst.Seconds())
		rounds++
		if worst < 0 {
			break
		}
		r.rep.SetPhase(fmt.Sprintf("round %d/%d: restart", k+1, o.Kills))
		if err := cl.Relaunch(ctx, victim); err != nil {
			roundErr = fmt.Errorf("round %d: restart node %s: %w", k+1, ids[victim], err)
			break
		}
	}
	stopLoad()
	wg.Wait()
	r.measured = time.Since(start)
	r.drain(ctx, ms)
	stopResend()
	rg.Wait()

	res.Details["kills"] = float64(rounds)
	res.AddLatency(result.Failover, failover)
	res.AddLatency(result.Failover+"_all_convs", allConvs)
	if fs := failover.Hist.Summary(); fs.Count > 0 {
		res.Details["failover_p50_s"] = fs.P50 / 1000
		res.Details["failover_max_s"] = fs.Max / 1000
		res.AddGoal("failover max (kill → first ack of a message sent after it)", "s", failoverGoal.Seconds(), fs.Max/1000, true)
	}

	r.rep.SetPhase("verify")
	check, err := clusterstate.Verify(ctx, dbURL, convs, r.f.Ledger.AckedMessages)
	if err != nil {
		return errors.Join(roundErr, err)
	}
	res.Details["pg_stored"] = float64(check.Stored)
	res.Details["pg_acked_checked"] = float64(check.Acked)
	res.Details["pg_lost"] = float64(check.Lost)
	res.Details["pg_duplicated"] = float64(check.Duplicated)
	res.Details["pg_seq_gaps"] = float64(check.Gaps)
	res.Details["pg_stored_not_acked"] = float64(check.StoredNotAcked)
	res.Problems = append(res.Problems, check.Samples...)
	fmt.Fprintf(env.Log, "node-kill: PostgreSQL holds %d messages of the run; of %d acked, %d lost; %d duplicated (%d seq gaps); %d stored but never acked\n",
		check.Stored, check.Acked, check.Lost, check.Duplicated, check.Gaps, check.StoredNotAcked)
	if !check.OK() {
		res.Fail("PostgreSQL against the acks: lost %d, duplicated %d (seq gaps %d)", check.Lost, check.Duplicated, check.Gaps)
	}
	return roundErr
}

// waitOwns polls the lease bucket until node owns at least one of convs,
// and returns those it owns, in convs' order.
func waitOwns(ctx context.Context, l *clusterstate.Leases, convs []charla.ConvID, node string, wait time.Duration) ([]charla.ConvID, error) {
	deadline := time.Now().Add(wait)
	var lastErr error
	for n := 0; n < 100000; n++ {
		var owned []charla.ConvID
		lastErr = nil
		for _, c := range convs {
			o, err := l.Owner(ctx, c)
			if err != nil {
				lastErr = err
				break
			}
			if o == node {
				owned = append(owned, c)
			}
		}
		if lastErr == nil && len(owned) > 0 {
			return owned, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, errors.Join(fmt.Errorf("node %s owned none of the run's %d conversations within %v (more --convs make that likelier)", node, len(convs), wait), lastErr)
}

// waitWritable waits until the clock saw conv's first post-kill ack, or
// the deadline.
func waitWritable(ctx context.Context, c *failoverClock, conv charla.ConvID, deadline time.Time) time.Time {
	for n := 0; n < 1_000_000; n++ {
		if at := c.writable(conv); !at.IsZero() {
			return at
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}
}
