package storetest

import (
	"fmt"
	"sync"
	"testing"

	"charla"
)

// testConcurrentAppendsAndReads runs what the engine does under load: many
// conversation actors' batches committed at once (each conversation with at
// most one Append in flight, as the interface promises), retries of earlier
// messages mixed in, and readers paging the same conversations meanwhile.
// Every message must be stored once, seqs contiguous, and a reader must never
// see a gap or a head that goes back.
func (s *suite) testConcurrentAppendsAndReads(t *testing.T) {
	const (
		writers        = 6
		convsPerWriter = 2
		calls          = 20
		perConvPerCall = 2
		readers        = 2
	)
	st := s.open(t)
	ctx := t.Context()
	conv := func(w, c int) charla.ConvID { return charla.ConvID(fmt.Sprintf("w%d-c%d", w, c)) }

	// wantIDs[w][c] is the client ids writer w got accepted in conversation
	// c, in seq order; each writer fills only its own entry.
	wantIDs := make([][][]string, writers)
	var writing sync.WaitGroup
	for w := range writers {
		writing.Add(1)
		go func() {
			defer writing.Done()
			ids := make([][]string, convsPerWriter)
			defer func() { wantIDs[w] = ids }()
			n := 0
			for call := range calls {
				var batch []charla.Message
				var want []charla.Seq
				var wantDup []bool
				for range perConvPerCall {
					for c := range convsPerWriter {
						n++
						id := idFor(w*1_000_000 + n)
						batch = append(batch, msg(conv(w, c), id, fmt.Sprintf("w%d n%d", w, n)))
						ids[c] = append(ids[c], id)
						want = append(want, charla.Seq(len(ids[c])))
						wantDup = append(wantDup, false)
					}
				}
				if call%5 == 4 {
					// A client retrying its first message after a lost ack.
					batch = append(batch, msg(conv(w, 0), ids[0][0], "retry"))
					want = append(want, 1)
					wantDup = append(wantDup, true)
				}
				res, err := st.Append(ctx, batch)
				if err != nil {
					t.Errorf("writer %d call %d: Append: %v", w, call, err)
					return
				}
				if len(res) != len(batch) {
					t.Errorf("writer %d call %d: %d results for %d messages", w, call, len(res), len(batch))
					return
				}
				for i, r := range res {
					if r.Seq != want[i] || r.Duplicate != wantDup[i] {
						t.Errorf("writer %d call %d message %d: seq %d duplicate %v, want seq %d duplicate %v",
							w, call, i, r.Seq, r.Duplicate, want[i], wantDup[i])
					}
				}
			}
		}()
	}

	done := make(chan struct{})
	var reading sync.WaitGroup
	for r := range readers {
		reading.Add(1)
		go func() {
			defer reading.Done()
			seen := map[charla.ConvID]charla.Seq{}
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				cv := conv((i+r)%writers, i%convsPerWriter)
				h, err := st.Head(ctx, cv)
				if err != nil {
					t.Errorf("reader %d: Head(%s): %v", r, cv, err)
					return
				}
				if h < seen[cv] {
					t.Errorf("reader %d: Head(%s) went back from %d to %d", r, cv, seen[cv], h)
				}
				seen[cv] = h
				after := h / 2
				got, err := st.Range(ctx, cv, after, 1000)
				if err != nil {
					t.Errorf("reader %d: Range(%s): %v", r, cv, err)
					return
				}
				// Head was read first, so Range must reach at least it, and
				// what it returns must be contiguous from after+1.
				if charla.Seq(len(got)) < h-after {
					t.Errorf("reader %d: Range(%s, %d) returned %d messages, but Head was already %d", r, cv, after, len(got), h)
				}
				for k, m := range got {
					if m.Seq != after+charla.Seq(k)+1 || m.Conv != cv {
						t.Errorf("reader %d: Range(%s, %d)[%d] is %s seq %d: not contiguous", r, cv, after, k, m.Conv, m.Seq)
						break
					}
				}
			}
		}()
	}
	writing.Wait()
	close(done)
	reading.Wait()
	if t.Failed() {
		return
	}

	for w := range writers {
		for c := range convsPerWriter {
			cv := conv(w, c)
			if h := mustHead(t, st, cv); h != calls*perConvPerCall {
				t.Errorf("Head(%s) = %d, want %d", cv, h, calls*perConvPerCall)
			}
			got := mustRange(t, st, cv, 0, 1000)
			if len(got) != len(wantIDs[w][c]) {
				t.Errorf("Range(%s) has %d messages, want %d", cv, len(got), len(wantIDs[w][c]))
				continue
			}
			for i, m := range got {
				if m.Seq != charla.Seq(i+1) || m.ClientMsgID != wantIDs[w][c][i] {
					t.Errorf("Range(%s)[%d] = seq %d id %s, want seq %d id %s", cv, i, m.Seq, m.ClientMsgID, i+1, wantIDs[w][c][i])
				}
			}
		}
	}
}

// testConcurrentCursors pins that concurrent read frames (several tabs of
// one user, several users) leave each cursor at the highest seq set, whatever
// the interleaving.
func (s *suite) testConcurrentCursors(t *testing.T) {
	const (
		goroutines = 4
		users      = 4
		rounds     = 5
		head       = 40
	)
	st := s.open(t)
	appended(t, st, "a", head, head)
	value := func(g, u, k int) charla.Seq { return charla.Seq((g*7+k*13+u*3)%head + 1) }
	want := map[string]charla.Seq{}
	for g := range goroutines {
		for u := range users {
			for k := range rounds {
				user := fmt.Sprintf("user-%d", u)
				want[user] = max(want[user], value(g, u, k))
			}
		}
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range rounds {
				for u := range users {
					if err := st.SetReadCursor(t.Context(), "a", fmt.Sprintf("user-%d", u), value(g, u, k)); err != nil {
						t.Errorf("goroutine %d: SetReadCursor: %v", g, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	got := mustCursors(t, st, "a")
	for user, w := range want {
		if got[user] != w {
			t.Errorf("cursor of %s = %d, want the highest set, %d", user, got[user], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("cursors %v, want %v", got, want)
	}
}
