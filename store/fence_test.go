package store

import (
	"errors"
	"fmt"
	"testing"
)

func TestFencedError(t *testing.T) {
	fe := &FencedError{
		Shards: []int{1, 3, 4},
		Fences: []ShardFence{
			{Shard: 1, Holds: true, Held: 5, Claimed: true, Stored: 7},
			{Shard: 3, Holds: true, Held: 5},
			{Shard: 4},
		},
	}
	err := fmt.Errorf("append: %w", fe)
	if !errors.Is(err, ErrFenced) {
		t.Error("not ErrFenced")
	}
	// A fenced write must not be spooled or retried: it is none of these.
	for _, other := range []error{ErrUnavailable, ErrInvalid, ErrClosed} {
		if errors.Is(err, other) {
			t.Errorf("FencedError matches %v", other)
		}
	}
	var got *FencedError
	if !errors.As(err, &got) || got != fe {
		t.Fatal("errors.As does not find the *FencedError")
	}
	want := "store: fenced: shard 1: this node holds epoch 5, the store has epoch 7; " +
		"shard 3: this node holds epoch 5, the store has none (never claimed); shard 4: not held by this node"
	if fe.Error() != want {
		t.Errorf("Error() =\n  %s\nwant\n  %s", fe.Error(), want)
	}
}
