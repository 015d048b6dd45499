package actors

import (
	"fmt"
	"testing"

	"charla"
)

// The ring answers every since with exactly the kept deliveries after it,
// across its compactions, and what it answered stays intact when later
// pushes reuse its buffer.
func TestRingAfter(t *testing.T) {
	frame := func(seq charla.Seq) []byte { return []byte(fmt.Sprintf(`{"seq":%d,"pad":"%*s"}`, seq, int(seq%7), "")) }
	for _, tc := range []struct {
		name        string
		max, pushed int
		wantFirst   charla.Seq // 0: empty
	}{
		{"empty", 4, 0, 0},
		{"below max", 4, 3, 1},
		{"at twice max, before compacting", 4, 8, 1},
		{"just compacted", 4, 9, 6},
		{"many compactions", 4, 50, 46},
		{"window of one", 1, 5, 5},
		{"disabled", 0, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ring{conv: "c", max: tc.max}
			for seq := charla.Seq(1); seq <= charla.Seq(tc.pushed); seq++ {
				r.push(seq, frame(seq))
			}
			if got := r.first(); got != tc.wantFirst {
				t.Fatalf("first = %d, want %d", got, tc.wantFirst)
			}
			answers := map[charla.Seq][]delivery{}
			for since := charla.Seq(0); since <= charla.Seq(tc.pushed); since++ {
				got := r.after(since)
				from := max(since+1, tc.wantFirst)
				if tc.wantFirst == 0 {
					from = charla.Seq(tc.pushed) + 1
				}
				if want := int(charla.Seq(tc.pushed) + 1 - from); len(got) != want {
					t.Fatalf("after(%d): %d deliveries, want %d", since, len(got), want)
				}
				answers[since] = got
			}
			// Later pushes move the frames in the buffer; the answers are copies.
			for seq := charla.Seq(tc.pushed) + 1; seq <= charla.Seq(tc.pushed+3*tc.max); seq++ {
				r.push(seq, frame(seq))
			}
			for since, got := range answers {
				for k, d := range got {
					want := max(since+1, tc.wantFirst) + charla.Seq(k)
					if d.seq != want || d.conv != "c" || string(d.frame) != string(frame(want)) {
						t.Fatalf("after(%d)[%d] = {%s %d %s}, want seq %d %s", since, k, d.conv, d.seq, d.frame, want, frame(want))
					}
				}
			}
		})
	}
}
