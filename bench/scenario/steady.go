package scenario

import (
	"context"
	"fmt"
	"time"

	"charla/bench/client"
	"charla/bench/fleet"
	"charla/bench/result"
)

// The latency goal of DESIGN.md: send→ack and send→delivered p99 ≤ 25 ms
// at 5,000 msg/s.
const latencyGoalMS = 25

// members creates n members, member i in conversation i % convs.
func (r *run) newMembers(n, convs, offset int) []*fleet.Member {
	ms := make([]*fleet.Member, n)
	for i := range n {
		ms[i] = r.f.NewMember(offset+i, r.conv((offset+i)%convs))
		if n := len(r.o.Addrs); n > 1 {
			// Round-robin over the nodes, shifted by one each round of
			// conversations, so that every conversation has members on
			// several nodes whatever convs is.
			k := offset + i
			ms[i].Node = (k + k/convs) % n
		}
		if r.o.Transport == TransportBoth && (offset+i)/convs%2 == 1 {
			// Alternate by round, not by index, so that every conversation
			// with two members or more has both kinds.
			ms[i].Transport = client.TransportPoll
		}
	}
	return ms
}

// connected keeps the members that have a connection.
func connected(ms []*fleet.Member) []*fleet.Member {
	var out []*fleet.Member
	for _, m := range ms {
		if m.Connected() {
			out = append(out, m)
		}
	}
	return out
}

// sendPhase paces the senders for d and records the measured duration.
func (r *run) sendPhase(ctx context.Context, senders []*fleet.Member, rate float64, d time.Duration) {
	r.rep.SetPhase("send")
	start := time.Now()
	r.f.Pace(ctx, senders, rate, d, r.o.Workers)
	r.measured += time.Since(start)
}

// drain waits for the last acks and deliveries and records what is left.
func (r *run) drain(ctx context.Context, members []*fleet.Member) {
	r.rep.SetPhase("drain")
	unacked, owed := r.f.Drain(ctx, members, r.o.Drain)
	r.res.Unacked = int64(unacked)
	if owed > 0 {
		fmt.Fprintf(r.env.Log, "%s: drain ended with %d deliveries still owed (counted as lost below)\n", r.res.Scenario, owed)
	}
}

func runSteady(ctx context.Context, o Options, _ Env, r *run) error {
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
	r.sendPhase(ctx, ms, o.Rate, o.Duration)
	r.drain(ctx, ms)
	r.memAfter(ctx, 0) // memory per connection is idle's figure; here messages dominate
	r.steadyGoals(o.Rate)
	return nil
}

// steadyGoals adds the latency and rate goals a loaded run is judged by.
func (r *run) steadyGoals(rate float64) {
	res := r.res
	r.finishLatencies()
	res.AddGoal("send→ack p99", "ms", latencyGoalMS, res.LatencyMS[result.SendAck].P99, true)
	res.AddGoal("send→deliver p99", "ms", latencyGoalMS, res.LatencyMS[result.SendDeliver].P99, true)
	if r.measured > 0 && rate > 0 {
		res.AddGoal("achieved rate (requested × 0.95)", "msg/s", rate*0.95, float64(r.f.Stats().Sent)/r.measured.Seconds(), false)
	}
}

// finishLatencies fills the send latencies before finish, for goals that
// need them.
func (r *run) finishLatencies() {
	r.res.AddLatency(result.SendAck, r.f.SendAck)
	r.res.AddLatency(result.SendDeliver, r.f.SendDeliver)
}
