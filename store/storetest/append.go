package storetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/store"
)

// step is one message of a sequencing scenario and the answer Append owes it.
type step struct {
	conv charla.ConvID
	id   int // client_msg_id, through idFor
	seq  charla.Seq
	dup  bool
}

// testSequencing pins the sequencer: head+1 per conversation in call order,
// conversations independent within and across calls, duplicates answered with
// the original seq and TS without consuming a seq or overwriting anything.
func (s *suite) testSequencing(t *testing.T) {
	tests := []struct {
		name  string
		calls [][]step
	}{
		{"OneCall", [][]step{
			{{"a", 1, 1, false}, {"a", 2, 2, false}, {"a", 3, 3, false}},
		}},
		{"ManyCalls", [][]step{
			{{"a", 1, 1, false}},
			{{"a", 2, 2, false}, {"a", 3, 3, false}},
			{{"a", 4, 4, false}},
		}},
		{"GroupCommit", [][]step{
			{{"a", 1, 1, false}, {"b", 2, 1, false}, {"a", 3, 2, false}, {"c", 4, 1, false}, {"b", 5, 2, false}},
		}},
		{"GroupCommitManyCalls", [][]step{
			{{"a", 1, 1, false}, {"b", 2, 1, false}},
			{{"b", 3, 2, false}, {"c", 4, 1, false}, {"a", 5, 2, false}},
			{{"a", 6, 3, false}},
		}},
		{"DuplicateInLaterCall", [][]step{
			{{"a", 1, 1, false}, {"a", 2, 2, false}},
			{{"a", 1, 1, true}, {"a", 3, 3, false}},
		}},
		{"DuplicateInSameCall", [][]step{
			{{"a", 1, 1, false}, {"a", 1, 1, true}, {"a", 2, 2, false}},
		}},
		{"OnlyDuplicates", [][]step{
			{{"a", 1, 1, false}, {"a", 2, 2, false}},
			{{"a", 2, 2, true}, {"a", 1, 1, true}},
			{{"a", 3, 3, false}},
		}},
		{"SameIDTwoConversations", [][]step{
			{{"a", 1, 1, false}, {"b", 1, 1, false}},
			{{"b", 1, 1, true}, {"a", 1, 1, true}, {"a", 2, 2, false}, {"b", 2, 2, false}},
		}},
		{"DuplicateBetweenOtherConversations", [][]step{
			{{"a", 1, 1, false}},
			{{"b", 1, 1, false}, {"c", 1, 1, false}},
			{{"b", 2, 2, false}, {"a", 1, 1, true}, {"c", 2, 2, false}},
			{{"a", 2, 2, false}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := s.open(t)
			type key struct {
				conv charla.ConvID
				id   int
			}
			first := map[key]store.AppendResult{}
			want := map[charla.ConvID][]charla.Message{}
			for c, call := range tt.calls {
				batch := make([]charla.Message, len(call))
				for i, sp := range call {
					// A resend may differ from the original; the store
					// must keep the original.
					batch[i] = msg(sp.conv, idFor(sp.id), fmt.Sprintf("call %d message %d", c, i))
				}
				res := mustAppend(t, st, batch...)
				for i, sp := range call {
					r, k := res[i], key{sp.conv, sp.id}
					where := fmt.Sprintf("call %d message %d (%s, id %d)", c, i, sp.conv, sp.id)
					if r.Seq != sp.seq || r.Duplicate != sp.dup {
						t.Errorf("%s: got seq %d duplicate %v, want seq %d duplicate %v", where, r.Seq, r.Duplicate, sp.seq, sp.dup)
						continue
					}
					checkTS(t, where, r.TS)
					if sp.dup {
						if !r.TS.Equal(first[k].TS) {
							t.Errorf("%s: duplicate TS %v, want the original %v", where, r.TS, first[k].TS)
						}
						continue
					}
					first[k] = r
					m := batch[i]
					m.Seq, m.TS = r.Seq, r.TS
					want[sp.conv] = append(want[sp.conv], m)
				}
			}
			for conv, msgs := range want {
				if h := mustHead(t, st, conv); h != charla.Seq(len(msgs)) {
					t.Errorf("Head(%q) = %d, want %d", conv, h, len(msgs))
				}
				checkMessages(t, fmt.Sprintf("Range(%q)", conv), mustRange(t, st, conv, 0, 1000), msgs)
			}
		})
	}
}

// testDuplicateManyCallsLater pins that dedup is not a recent-window cache:
// a retry of a message accepted many calls (or a restart) earlier is still
// recognised, in a call that also carries new messages.
func (s *suite) testDuplicateManyCallsLater(t *testing.T) {
	const calls = 40
	st := s.open(t)
	results := map[string]store.AppendResult{} // conv/id → first result
	for i := 1; i <= calls; i++ {
		res := mustAppend(t, st,
			msg("a", idFor(i), fmt.Sprintf("a %d", i)),
			msg("b", idFor(i), fmt.Sprintf("b %d", i)))
		results[fmt.Sprintf("a/%d", i)] = res[0]
		results[fmt.Sprintf("b/%d", i)] = res[1]
	}
	res := mustAppend(t, st,
		msg("a", idFor(1000), "new a"),
		msg("a", idFor(1), "retry of a 1"),
		msg("b", idFor(20), "retry of b 20"),
		msg("a", idFor(calls), "retry of the last a"),
		msg("b", idFor(1001), "new b"),
	)
	wants := []struct {
		seq  charla.Seq
		dup  bool
		orig string
	}{
		{calls + 1, false, ""},
		{1, true, "a/1"},
		{20, true, "b/20"},
		{calls, true, fmt.Sprintf("a/%d", calls)},
		{calls + 1, false, ""},
	}
	for i, w := range wants {
		r := res[i]
		if r.Seq != w.seq || r.Duplicate != w.dup {
			t.Errorf("result %d: got seq %d duplicate %v, want seq %d duplicate %v", i, r.Seq, r.Duplicate, w.seq, w.dup)
			continue
		}
		if w.dup && !r.TS.Equal(results[w.orig].TS) {
			t.Errorf("result %d: duplicate TS %v, want the original %v", i, r.TS, results[w.orig].TS)
		}
	}
	for _, conv := range []charla.ConvID{"a", "b"} {
		got := mustRange(t, st, conv, calls-2, 10)
		if fmt.Sprint(seqs(got)) != fmt.Sprint([]charla.Seq{calls - 1, calls, calls + 1}) {
			t.Errorf("Range(%q, %d) seqs %v, want %d..%d with no gap", conv, calls-2, seqs(got), calls-1, calls+1)
		}
	}
	if got := mustRange(t, st, "a", 0, 1); len(got) != 1 || !jsonEqual(got[0].Body, msg("a", "", "a 1").Body) {
		t.Errorf("Range(a, 0, 1) = %v, want the original first message untouched by its retry", got)
	}
}

// testIgnoresInputSeq pins that the store is the sequencer of record: a Seq
// the caller put in a message (stale, optimistic, or garbage) is ignored.
func (s *suite) testIgnoresInputSeq(t *testing.T) {
	st := s.open(t)
	in := []charla.Message{msg("a", idFor(1), "x"), msg("a", idFor(2), "y"), msg("a", idFor(3), "z"), msg("b", idFor(4), "w")}
	in[0].Seq, in[1].Seq, in[2].Seq, in[3].Seq = 42, 7, 0, 1<<62
	res := mustAppend(t, st, in...)
	want := []charla.Seq{1, 2, 3, 1}
	for i, r := range res {
		if r.Seq != want[i] || r.Duplicate {
			t.Errorf("result %d: seq %d duplicate %v, want seq %d", i, r.Seq, r.Duplicate, want[i])
		}
	}
	next := msg("a", idFor(5), "v")
	next.Seq = 1
	if r := mustAppend(t, st, next); r[0].Seq != 4 {
		t.Errorf("append with input Seq 1 at head 3: got seq %d, want 4", r[0].Seq)
	}
	if got := seqs(mustRange(t, st, "a", 0, 10)); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Errorf("Range(a) seqs %v, want [1 2 3 4]", got)
	}
}

// testAppendEmpty pins that an empty batch (a store actor flushing an empty
// queue) is harmless.
func (s *suite) testAppendEmpty(t *testing.T) {
	st := s.open(t)
	for _, msgs := range [][]charla.Message{nil, {}} {
		res, err := st.Append(t.Context(), msgs)
		if err != nil || len(res) != 0 {
			t.Errorf("Append(%#v) = %v, %v; want no results and no error", msgs, res, err)
		}
	}
	mustAppend(t, st, msg("a", idFor(1), "x"))
	if h := mustHead(t, st, "a"); h != 1 {
		t.Errorf("Head after empty appends and one message = %d, want 1", h)
	}
}

// testInvalidIsAtomic pins "on error nothing of the call is": a call with one
// bad message writes none of its good ones, burns no seq and no client id.
func (s *suite) testInvalidIsAtomic(t *testing.T) {
	bad := func(f func(*charla.Message)) charla.Message {
		m := msg("c", idFor(99), "bad")
		f(&m)
		return m
	}
	tests := []struct {
		name  string
		batch []charla.Message
	}{
		{"EmptyConv", []charla.Message{
			msg("a", idFor(1), "good"), bad(func(m *charla.Message) { m.Conv = "" }),
		}},
		{"EmptyClientMsgID", []charla.Message{
			msg("a", idFor(1), "good"), msg("b", idFor(1), "good"), bad(func(m *charla.Message) { m.ClientMsgID = "" }),
		}},
		{"BodyNotJSON", []charla.Message{
			bad(func(m *charla.Message) { m.Body = json.RawMessage(`{"text": unquoted`) }), msg("a", idFor(1), "good"),
		}},
	}
	st := s.open(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res, err := st.Append(t.Context(), tt.batch); err == nil {
				t.Fatalf("Append = %v, nil; want an error", res)
			}
			for _, conv := range []charla.ConvID{"a", "b", "c"} {
				if h := mustHead(t, st, conv); h != 0 {
					t.Errorf("Head(%q) after a failed call = %d, want 0", conv, h)
				}
			}
		})
	}
	res := mustAppend(t, st, msg("a", idFor(1), "good"), msg("c", idFor(99), "now good"))
	for i, r := range res {
		if r.Seq != 1 || r.Duplicate {
			t.Errorf("result %d after failed calls: seq %d duplicate %v, want seq 1, not a duplicate", i, r.Seq, r.Duplicate)
		}
	}
}

// testRoundTrip pins that what Range returns is what was appended: body (as
// JSON), sender, client id, and TS (UTC, truncated to µs), with Conv and Seq
// filled in, and that Append results and Range agree on TS to the µs.
func (s *suite) testRoundTrip(t *testing.T) {
	madrid := time.FixedZone("CEST", 2*60*60)
	lima := time.FixedZone("PET", -5*60*60)
	tests := []struct {
		name string
		id   string
		from charla.Sender
		body string
		ts   time.Time
	}{
		{"Plain", idFor(1), charla.Sender{ID: "cust-1", Role: charla.RoleCustomer},
			`{"text":"hola"}`, time.Date(2024, 5, 1, 12, 34, 56, 123456789, madrid)},
		{"UnicodeAndHTML", idFor(2), charla.Sender{ID: "agente-ñandú", Role: charla.RoleAgent},
			`{"text":"¡Hola! ¿Qué tal? 😀 <b>&amp;</b> \"quoted\" \\ \n tab\t"}`, time.Date(2024, 5, 1, 12, 34, 57, 0, time.UTC)},
		{"Nested", idFor(3), charla.Sender{ID: "admin", Role: charla.RoleAdmin},
			`{"text":"see","attachments":[{"url":"https://e.example/a?b=1&c=2","size":12345}],"meta":{"k":null,"ok":true,"n":1.5,"list":[]}}`,
			time.Date(1999, 12, 31, 23, 59, 59, 999999999, lima)},
		{"Spacing", idFor(4), charla.Sender{ID: "cust-1", Role: charla.RoleCustomer},
			"{ \"text\" : \"spaced\" ,\n  \"n\" : [1, 2, 3] }", time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)},
		{"Large", idFor(5), charla.Sender{ID: "cust-1", Role: charla.RoleCustomer},
			`{"text":"` + strings.Repeat("0123456789abcdef", 2048) + `"}`, time.Date(2024, 5, 1, 12, 0, 0, 1, time.UTC)},
		{"WhatsAppID", "wamid.HBgNMzQ2MDAxMTEyMjMzFQIAEhggQjQ5RkI2QzI4RTlGNDY1RkE2", charla.Sender{ID: "34600111222", Role: charla.RoleCustomer},
			`{"text":"from WhatsApp"}`, time.Date(2024, 5, 1, 12, 0, 0, 999, time.UTC)},
	}
	st := s.open(t)
	var in, want []charla.Message
	for _, tt := range tests {
		m := charla.Message{Conv: "conv-1", ClientMsgID: tt.id, Sender: tt.from, Body: json.RawMessage(tt.body), TS: tt.ts}
		in = append(in, m)
		m.Seq, m.TS = charla.Seq(len(in)), wantTS(tt.ts)
		want = append(want, m)
	}
	// Two calls, so that both a multi-message and a single-message commit
	// are read back.
	res := append(mustAppend(t, st, in[:len(in)-1]...), mustAppend(t, st, in[len(in)-1])...)
	got := mustRange(t, st, "conv-1", 0, 100)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res[i].Seq != want[i].Seq || res[i].Duplicate {
				t.Errorf("Append result: seq %d duplicate %v, want seq %d", res[i].Seq, res[i].Duplicate, want[i].Seq)
			}
			if !res[i].TS.Equal(want[i].TS) {
				t.Errorf("Append result TS %v, want %v (input %v truncated to µs, in UTC)", res[i].TS, want[i].TS, tt.ts)
			}
			checkTS(t, "Append result", res[i].TS)
			if i >= len(got) {
				t.Fatalf("Range returned %d messages, want %d", len(got), len(want))
			}
			if d := diffMessage(got[i], want[i]); d != "" {
				t.Errorf("Range: %s", d)
			}
			checkTS(t, "Range", got[i].TS)
		})
	}
	if len(got) != len(want) {
		t.Errorf("Range returned %d messages, want %d", len(got), len(want))
	}
}

// testStoreAssignsTS pins that a message without TS is stamped by the store
// at Append, and that Range reports the very same instant.
func (s *suite) testStoreAssignsTS(t *testing.T) {
	st := s.open(t)
	before := time.Now().Truncate(time.Microsecond)
	res := mustAppend(t, st, msg("a", idFor(1), "x"), msg("a", idFor(2), "y"))
	after := time.Now()
	got := mustRange(t, st, "a", 0, 10)
	if len(got) != 2 {
		t.Fatalf("Range returned %d messages, want 2", len(got))
	}
	for i, r := range res {
		checkTS(t, fmt.Sprintf("result %d", i), r.TS)
		if r.TS.Before(before) || r.TS.After(after) {
			t.Errorf("result %d: TS %v outside the Append call [%v, %v]", i, r.TS, before, after)
		}
		if !got[i].TS.Equal(r.TS) {
			t.Errorf("message %d: Range TS %v, Append said %v", i, got[i].TS, r.TS)
		}
	}
}
