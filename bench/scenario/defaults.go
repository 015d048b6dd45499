package scenario

import "time"

// Defaults are each scenario's sizes for the closing-note figures of
// issue 3 (DESIGN.md's goals); flags given on the command line override
// them.
func Defaults(name string) Options {
	switch name {
	case "steady":
		return Options{Conns: 1000, Convs: 100, Rate: 5000, Duration: 60 * time.Second}
	case "idle":
		return Options{Conns: 100000, Duration: 30 * time.Second, PingSample: 1000}
	case "silent-drop":
		return Options{Conns: 20000, Silent: 10000, Duration: 30 * time.Second}
	case "reconnect-storm":
		return Options{Conns: 10000, Convs: 100, Rate: 1000, Duration: 30 * time.Second, RestartAfter: 10 * time.Second}
	case "fanout":
		return Options{Conns: 1000, Convs: 1, Rate: 100, Duration: 30 * time.Second, Senders: 1}
	case "slow-consumer":
		return Options{Conns: 1000, Convs: 100, Rate: 5000, Duration: 60 * time.Second, Slow: 100}
	case "inventory":
		return Options{Conns: 100, Convs: 10, Rate: 500, InventoryRate: 500, Duration: 60 * time.Second}
	case "webhook":
		return Options{Conns: 100, Convs: 100, Rate: 500, Duration: 60 * time.Second}
	case "node-kill":
		return Options{Conns: 120, Convs: 12, Rate: 300, Duration: 3 * time.Second, Kills: 10}
	}
	return Options{Conns: 100, Convs: 10, Rate: 100, Duration: 10 * time.Second}
}

// Quick are sizes that finish in well under a minute each on a 2-core
// machine, for the default suite (make bench): the same scenarios, small
// enough to run on every change.
func Quick(name string) Options {
	switch name {
	case "steady":
		return Options{Conns: 1000, Convs: 100, Rate: 2000, Duration: 20 * time.Second}
	case "idle":
		return Options{Conns: 5000, Duration: 15 * time.Second, PingSample: 500}
	case "silent-drop":
		return Options{Conns: 4000, Silent: 2000, Duration: 15 * time.Second}
	case "reconnect-storm":
		return Options{Conns: 2000, Convs: 50, Rate: 500, Duration: 20 * time.Second, RestartAfter: 7 * time.Second}
	case "fanout":
		return Options{Conns: 1000, Convs: 1, Rate: 50, Duration: 15 * time.Second, Senders: 1}
	case "slow-consumer":
		return Options{Conns: 500, Convs: 50, Rate: 1000, Duration: 20 * time.Second, Slow: 50}
	case "inventory":
		return Options{Conns: 50, Convs: 10, Rate: 200, InventoryRate: 200, Duration: 20 * time.Second}
	case "webhook":
		return Options{Conns: 50, Convs: 50, Rate: 500, Duration: 15 * time.Second}
	case "node-kill":
		return Options{Conns: 60, Convs: 12, Rate: 200, Duration: 2 * time.Second, Kills: 2}
	}
	return Defaults(name)
}

// Settings lists the options as results.json's "settings": every knob by
// name, durations as text, and the JWT secret never (only whether one was
// used).
func (o Options) Settings() map[string]any {
	s := map[string]any{
		"addr": o.Addr, "path": o.Path, "conns": o.Conns, "convs": o.Convs, "rate": o.Rate,
		"duration": o.Duration.String(), "body_size": o.BodySize, "connect_concurrency": o.ConnectConcurrency,
		"handshake_timeout": o.HandshakeTimeout.String(), "drain": o.Drain.String(), "source_addrs": o.SourceAddrs,
		"workers": o.Workers, "senders": o.Senders, "ping_sample": o.PingSample, "ping_interval": o.PingInterval.String(),
		"silent": o.Silent, "detect_wait": o.DetectWait.String(), "heartbeat_timeout": o.HeartbeatTimeout.String(),
		"restart_after": o.RestartAfter.String(), "reconnect_window": o.ReconnectWindow.String(),
		"backoff_base": o.BackoffBase.String(), "backoff_cap": o.BackoffCap.String(),
		"slow": o.Slow, "slow_recv_buf": o.SlowRecvBuf, "run_id": o.RunID, "metrics_url": o.MetricsURL, "engine_debug_addr": o.DebugAddr,
		"soap_admin": o.SOAPAdmin, "inventory_rate": o.InventoryRate, "zipf_s": o.ZipfS,
		"soap_latency": o.SOAPLatency.String(), "breaker_wait": o.BreakerWait.String(),
		"auth": "dev", "transport": o.Transport,
	}
	if len(o.Addrs) > 0 {
		s["addrs"] = o.Addrs
	}
	if o.Kills > 0 {
		s["kills"], s["kill_every"] = o.Kills, o.KillEvery.String()
		s["failover_wait"], s["resend_after"] = o.FailoverWait.String(), o.ResendAfter.String()
	}
	if o.Secret != "" {
		s["auth"] = "jwt"
	}
	return s
}
