package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{NodeID: "n1"}.withDefaults()
	want := Config{NodeID: "n1", Shards: 64, LeaseTTL: 6 * time.Second, Bucket: "charla_leases", NodesBucket: "charla_nodes", Replicas: 1}
	if c != want {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
	if err := c.validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
	if c.tick() != 2*time.Second || c.fence() != 4*time.Second {
		t.Fatalf("tick %s, fence %s; want 2s and 4s", c.tick(), c.fence())
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // every one must appear in the error; none: valid
	}{
		{"valid", Config{NodeID: "node-1_a", Shards: 1, LeaseTTL: MinLeaseTTL}, nil},
		{"empty node id", Config{}, []string{"node id is required"}},
		{"node id with a dot", Config{NodeID: "host.example"}, []string{`node id "host.example"`}},
		{"shards below 1", Config{NodeID: "n", Shards: -1}, []string{"shards must be at least 1 (got -1)"}},
		{"ttl too small", Config{NodeID: "n", LeaseTTL: 100 * time.Millisecond}, []string{"lease ttl must be at least 300ms (got 100ms)"}},
		{"negative ttl", Config{NodeID: "n", LeaseTTL: -time.Second}, []string{"lease ttl must be at least"}},
		{"bad bucket", Config{NodeID: "n", Bucket: "a.b"}, []string{`bucket "a.b"`}},
		{"same buckets", Config{NodeID: "n", Bucket: "x", NodesBucket: "x"}, []string{"must differ"}},
		{"replicas", Config{NodeID: "n", Replicas: 7}, []string{"replicas must be between 1 and 5 (got 7)"}},
		{"every problem at once", Config{Shards: -3, LeaseTTL: time.Millisecond, Replicas: -1}, []string{
			"node id is required", "shards must be at least 1 (got -3)", "lease ttl must be at least 300ms (got 1ms)", "replicas",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.withDefaults().validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("validate() = %q, missing %q", err, w)
				}
			}
		})
	}
}

// Start reports every problem at once, before it talks to NATS at all.
func TestStartRefusesBadConfigAtOnce(t *testing.T) {
	_, err := Start(context.Background(), nil, Config{Shards: -1, LeaseTTL: 10 * time.Millisecond}, nil, nil, zerolog.Nop())
	if err == nil {
		t.Fatal("Start with a bad config succeeded")
	}
	for _, w := range []string{"JetStream context is required", "Claimer is required", "node id is required", "shards must be at least 1", "lease ttl must be at least"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Start() = %q, missing %q", err, w)
		}
	}
}
