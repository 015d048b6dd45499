package postgres

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"charla"
	"charla/store"
)

// Saves of workflow states from two nodes, in opposite orders, and group
// commits of the same conversations never deadlock: every writer locks the
// conversations' rows in id order. In the callers' order this deadlocked
// (SQLSTATE 40P01, retried) within a few rounds.
func TestSavesAndAppendsDoNotDeadlock(t *testing.T) {
	s := openTest(t)
	var convs []charla.ConvID
	for i := range 20 {
		convs = append(convs, charla.ConvID(fmt.Sprintf("dl-%02d", i)))
	}
	states := func(version uint64, order []charla.ConvID) []store.ConvState {
		out := make([]store.ConvState, len(order))
		for i, c := range order {
			out[i] = store.ConvState{ID: c, Channel: "web", Status: "open", Version: version, LastActivity: time.Now(), CreatedAt: time.Now(), Reads: map[string]charla.Seq{}}
		}
		return out
	}
	reversed := slices.Clone(convs)
	slices.Reverse(reversed)
	before := s.Stats().Ops
	var wg sync.WaitGroup
	for w, order := range [][]charla.ConvID{convs, reversed, convs, reversed} {
		wg.Go(func() {
			for round := range 30 {
				if err := s.SaveConvStates(t.Context(), states(uint64(round*10+w), order)); err != nil {
					t.Errorf("save: %v", err)
					return
				}
				var msgs []charla.Message
				for _, c := range order {
					msgs = append(msgs, tmsg(c, fmt.Sprintf("w%d-r%d-%s", w, round, c), "hi"))
				}
				if _, err := s.Append(t.Context(), msgs); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	after := s.Stats().Ops
	for _, op := range []string{"workflow", "append"} {
		if r := after[op].Retries - before[op].Retries; r > 0 {
			t.Errorf("%s retried %d times (deadlocks)", op, r)
		}
	}
}
