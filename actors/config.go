package actors

import "time"

// Config holds what the actor tree needs to know; cmd/charla fills it from
// flags and validates it (charla.Config) before the tree is built.
type Config struct {
	HeartbeatInterval time.Duration // server ping period
	HeartbeatTimeout  time.Duration // silence after which a connection is closed (4008)
	SendQueueFrames   int           // per-connection outbound cap in frames (4008 past it)
	SendQueueBytes    int           // per-connection outbound cap in bytes (4008 past it)
	MaxBodyBytes      int           // largest message body accepted (too_large past it)
	MaxSubscriptions  int           // conversations one connection may follow at once
	DedupWindow       int           // client_msg_ids remembered per conversation in memory
	RecentWindow      int           // messages kept per conversation to serve replays from memory
	ReplayPage        int           // messages read from the store per replay page
	IdleTimeout       time.Duration // a conversation with no activity and no subscriber stops after this
	SweepInterval     time.Duration // how often leftovers are checked for idleness
	StoreBatchMax     int           // most messages in one group commit
	StoreWriteTimeout time.Duration // with a spool: how long a write waits for the store before it is spooled
	StoreBreaker      BreakerConfig // with a spool: when the store is considered down
	DrainBatch        int           // messages per store call when draining the spool
	DrainTimeout      time.Duration // deadline of one drain call: off the ack path, so far longer than StoreWriteTimeout
	ShutdownGrace     time.Duration // how long in-flight sends may take to finish on shutdown
}

// DefaultConfig returns DESIGN.md's defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 5 * time.Second,
		HeartbeatTimeout:  10 * time.Second,
		SendQueueFrames:   1024,
		SendQueueBytes:    4 << 20,
		MaxBodyBytes:      32 << 10,
		MaxSubscriptions:  1000,
		DedupWindow:       1024,
		RecentWindow:      256,
		ReplayPage:        256,
		IdleTimeout:       15 * time.Minute,
		SweepInterval:     5 * time.Minute,
		StoreBatchMax:     2000,
		StoreWriteTimeout: time.Second,
		StoreBreaker:      BreakerConfig{Failures: 3, Window: 20, Ratio: 0.5, Cooldown: 2 * time.Second},
		DrainBatch:        1000,
		DrainTimeout:      10 * time.Second,
		ShutdownGrace:     5 * time.Second,
	}
}
