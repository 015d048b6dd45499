package storetest

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"charla"
	"charla/store"
)

// appended appends n messages (client ids 1..n) to conv, in calls of at most
// per messages, and returns them as Range must return them.
func appended(t *testing.T, st store.Store, conv charla.ConvID, n, per int) []charla.Message {
	t.Helper()
	var out []charla.Message
	for i := 0; i < n; i += per {
		var batch []charla.Message
		for j := i; j < min(n, i+per); j++ {
			batch = append(batch, msg(conv, idFor(j+1), fmt.Sprintf("%s %d", conv, j+1)))
		}
		for k, r := range mustAppend(t, st, batch...) {
			m := batch[k]
			m.Seq, m.TS = r.Seq, r.TS
			out = append(out, m)
		}
	}
	return out
}

// testRangeWindow pins Range(after, limit): seq order, the window starting
// right after `after`, limit respected, nothing past the head.
func (s *suite) testRangeWindow(t *testing.T) {
	st := s.open(t)
	all := appended(t, st, "a", 10, 4)
	tests := []struct {
		after charla.Seq
		limit int
		from  int // want all[from:to]
		to    int
	}{
		{0, 100, 0, 10},
		{0, 10, 0, 10},
		{0, 3, 0, 3},
		{4, 3, 4, 7},
		{8, 100, 8, 10},
		{9, 1, 9, 10},
		{10, 5, 0, 0},
		{11, 5, 0, 0},
		{1 << 40, 5, 0, 0},
		{0, 0, 0, 0},
		{3, -1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("after%d_limit%d", tt.after, tt.limit), func(t *testing.T) {
			checkMessages(t, "Range", mustRange(t, st, "a", tt.after, tt.limit), all[tt.from:tt.to])
		})
	}
}

// testRangePaging pins that paging with the last seen seq as `after` visits
// every message exactly once, in order: the history and resume paths.
func (s *suite) testRangePaging(t *testing.T) {
	st := s.open(t)
	all := appended(t, st, "a", 25, 5)
	appended(t, st, "b", 3, 3) // a neighbour that must not leak into a's pages
	var got []charla.Message
	var after charla.Seq
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("paging did not end after %d pages (at seq %d)", pages, after)
		}
		page := mustRange(t, st, "a", after, 4)
		if len(page) > 4 {
			t.Fatalf("page of limit 4 has %d messages", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Seq
	}
	checkMessages(t, "paged Range", got, all)
}

// testUnknownConversation pins that reading a conversation nobody wrote to is
// not an error: it is empty, with head 0 and no cursors.
func (s *suite) testUnknownConversation(t *testing.T) {
	st := s.open(t)
	appended(t, st, "known", 2, 2)
	if err := st.SetReadCursor(t.Context(), "known", "alice", 1); err != nil {
		t.Fatalf("SetReadCursor: %v", err)
	}
	for _, conv := range []charla.ConvID{"unknown", "know", "known2"} {
		if got := mustRange(t, st, conv, 0, 10); len(got) != 0 {
			t.Errorf("Range(%q) = %d messages, want none", conv, len(got))
		}
		if h := mustHead(t, st, conv); h != 0 {
			t.Errorf("Head(%q) = %d, want 0", conv, h)
		}
		if m := mustCursors(t, st, conv); len(m) != 0 {
			t.Errorf("ReadCursors(%q) = %v, want empty", conv, m)
		}
	}
}

// testConversationIsolation pins that conversation IDs are compared exactly:
// IDs that are prefixes of each other, differ in case, or use every allowed
// punctuation character, and the longest allowed ID, each get their own log.
func (s *suite) testConversationIsolation(t *testing.T) {
	convs := []charla.ConvID{
		"a", "a:1", "a:", "A", "a.b", "a1", "a+b@c_d-e", "wa:+34600111222",
		charla.ConvID(strings.Repeat("z", charla.MaxConvIDLen)),
	}
	st := s.open(t)
	want := map[charla.ConvID][]charla.Message{}
	var batch []charla.Message
	// Conversation i gets i+1 messages, all in one interleaved call, with
	// the same client ids reused across conversations.
	for round := 0; round < len(convs); round++ {
		for i, conv := range convs {
			if round <= i {
				m := msg(conv, idFor(round+1), fmt.Sprintf("%s %d", conv, round+1))
				batch = append(batch, m)
				m.Seq = charla.Seq(round + 1)
				want[conv] = append(want[conv], m)
			}
		}
	}
	res := mustAppend(t, st, batch...)
	byConv := map[charla.ConvID]int{}
	for i, r := range res {
		if r.Duplicate {
			t.Errorf("result %d (%s): duplicate, want new", i, batch[i].Conv)
		}
		want[batch[i].Conv][byConv[batch[i].Conv]].TS = r.TS
		byConv[batch[i].Conv]++
	}
	for i, conv := range convs {
		if h := mustHead(t, st, conv); h != charla.Seq(i+1) {
			t.Errorf("Head(%q) = %d, want %d", conv, h, i+1)
		}
		checkMessages(t, fmt.Sprintf("Range(%q)", conv), mustRange(t, st, conv, 0, 100), want[conv])
	}
}

// testCursorsForwardOnly pins read cursors: one per user, and a lower seq
// (a late or reordered read frame) never moves a cursor back.
func (s *suite) testCursorsForwardOnly(t *testing.T) {
	st := s.open(t)
	appended(t, st, "a", 10, 10)
	ops := []struct {
		user string
		seq  charla.Seq
		want map[string]charla.Seq
	}{
		{"alice", 3, map[string]charla.Seq{"alice": 3}},
		{"bob", 5, map[string]charla.Seq{"alice": 3, "bob": 5}},
		{"alice", 2, map[string]charla.Seq{"alice": 3, "bob": 5}},
		{"alice", 3, map[string]charla.Seq{"alice": 3, "bob": 5}},
		{"alice", 7, map[string]charla.Seq{"alice": 7, "bob": 5}},
		{"bob", 1, map[string]charla.Seq{"alice": 7, "bob": 5}},
		{"carol@example.com", 10, map[string]charla.Seq{"alice": 7, "bob": 5, "carol@example.com": 10}},
		{"bob", 10, map[string]charla.Seq{"alice": 7, "bob": 10, "carol@example.com": 10}},
	}
	for i, op := range ops {
		if err := st.SetReadCursor(t.Context(), "a", op.user, op.seq); err != nil {
			t.Fatalf("op %d: SetReadCursor(a, %s, %d): %v", i, op.user, op.seq, err)
		}
		if got := mustCursors(t, st, "a"); !maps.Equal(got, op.want) {
			t.Errorf("op %d: after SetReadCursor(a, %s, %d): cursors %v, want %v", i, op.user, op.seq, got, op.want)
		}
	}
}

// testCursorsPerConversation pins that a user's cursors in different
// conversations are independent.
func (s *suite) testCursorsPerConversation(t *testing.T) {
	st := s.open(t)
	appended(t, st, "a", 5, 5)
	appended(t, st, "a:1", 5, 5)
	set := func(conv charla.ConvID, user string, seq charla.Seq) {
		t.Helper()
		if err := st.SetReadCursor(t.Context(), conv, user, seq); err != nil {
			t.Fatalf("SetReadCursor(%s, %s, %d): %v", conv, user, seq, err)
		}
	}
	set("a", "alice", 2)
	set("a:1", "alice", 4)
	set("a:1", "bob", 1)
	set("a", "alice", 1)
	for conv, want := range map[charla.ConvID]map[string]charla.Seq{
		"a":   {"alice": 2},
		"a:1": {"alice": 4, "bob": 1},
		"b":   {},
	} {
		if got := mustCursors(t, st, conv); !maps.Equal(got, want) {
			t.Errorf("ReadCursors(%q) = %v, want %v", conv, got, want)
		}
	}
}
