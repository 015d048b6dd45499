package scenario

import (
	"context"
)

func runFanout(ctx context.Context, o Options, _ Env, r *run) error {
	if err := r.start(false, o.Senders); err != nil {
		return err
	}
	r.memBefore(ctx)
	conv := r.conv(0)
	subs := r.newMembers(o.Conns, 1, 0)
	senders := r.newMembers(o.Senders, 1, o.Conns)
	for _, m := range append(subs, senders...) {
		m.Conv = conv
	}
	n := r.connect(ctx, append(subs, senders...))
	if err := r.needAll(n, o.Conns+o.Senders); err != nil {
		return err
	}
	if err := r.subscribe(ctx, subs); err != nil {
		return err
	}
	r.sendPhase(ctx, senders, o.Rate, o.Duration)
	r.drain(ctx, append(subs, senders...))
	r.memAfter(ctx, 0) // memory per connection is idle's figure; here messages dominate
	r.steadyGoals(o.Rate)
	r.res.Details["subscribers"] = float64(o.Conns)
	r.res.Details["senders"] = float64(o.Senders)
	if sec := r.measured.Seconds(); sec > 0 {
		r.res.Details["expected_deliveries_per_s"] = o.Rate * float64(o.Conns)
	}
	return nil
}
