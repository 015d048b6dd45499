package actors

import (
	"fmt"
	"testing"
	"time"

	"charla"
)

func TestUUIDKey(t *testing.T) {
	const id = "0123abcd-4567-4def-89ab-0123456789ab"
	base, ok := uuidKey(id)
	if !ok {
		t.Fatalf("%s: not a UUID", id)
	}
	if want := [16]byte{0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x4d, 0xef, 0x89, 0xab, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab}; base.uuid != want || base.upper != 0 {
		t.Fatalf("%s: %x (upper %b), want %x", id, base.uuid, base.upper, want)
	}
	cases := []struct {
		id       string
		uuid     bool
		sameAsID bool
	}{
		{id, true, true},
		{"0123ABCD-4567-4def-89ab-0123456789ab", true, false}, // another id to the store
		{"0123abcd-4567-4def-89ab-0123456789aB", true, false},
		{"0123abcd-4567-4def-89ab-0123456789ac", true, false},
		{"0123abcd-4567-4def-89ab-0123456789a", false, false},
		{"0123abcd-4567-4def-89ab-0123456789ab#deleted", false, false},
		{"0123abcd+4567-4def-89ab-0123456789ab", false, false},
		{"0123abcg-4567-4def-89ab-0123456789ab", false, false},
		{"", false, false},
	}
	for _, tc := range cases {
		k, ok := uuidKey(tc.id)
		if ok != tc.uuid || (ok && (k == base) != tc.sameAsID) {
			t.Errorf("%q: uuid %v, same key as %s %v; want %v, %v", tc.id, ok, id, k == base, tc.uuid, tc.sameAsID)
		}
	}
}

// The window answers what it remembers with the ack of the first time,
// forgets the oldest first, and tells ids apart exactly (case included),
// whatever their form.
func TestDedupWindow(t *testing.T) {
	w := newDedupWindow(3)
	ts := time.Date(2026, 11, 28, 20, 0, 0, 123456000, time.UTC)
	id := func(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }
	ack := func(i int) ackInfo {
		return ackInfo{seq: charla.Seq(i), ts: ts.Add(time.Duration(i) * time.Microsecond)}
	}
	for i := 1; i <= 3; i++ {
		w.add(id(i), ack(i))
	}
	w.add(id(1), ack(9)) // a second accept of a remembered id keeps its place
	if a, ok := w.get(id(1)); !ok || a.seq != 9 || !a.ts.Equal(ack(9).ts) {
		t.Fatalf("id 1: %+v %v", a, ok)
	}
	w.add("00000000-0000-4000-8000-00000000000A", ack(10)) // upper case: a fourth id
	w.add(id(4)+"#deleted", ack(4))
	if _, ok := w.get(id(1)); ok {
		t.Error("id 1 still remembered after 2 newer ids in a window of 3")
	}
	if _, ok := w.get(id(2)); ok {
		t.Error("id 2 still remembered after 2 newer ids in a window of 3")
	}
	if _, ok := w.get(id(10)); ok {
		t.Error("the lower-case id answered for the upper-case one")
	}
	for _, tc := range []struct {
		id  string
		ack ackInfo
	}{{id(3), ack(3)}, {"00000000-0000-4000-8000-00000000000A", ack(10)}, {id(4) + "#deleted", ack(4)}} {
		a, ok := w.get(tc.id)
		if !ok || a.seq != tc.ack.seq || !a.ts.Equal(tc.ack.ts) || a.ts.Location() != time.UTC {
			t.Errorf("%s: %+v %v, want %+v", tc.id, a, ok, tc.ack)
		}
	}
	w.add(id(5), ack(5)) // evicts id 3, then the tombstone
	w.add(id(6), ack(6))
	w.add(id(7), ack(7))
	if _, ok := w.get(id(4) + "#deleted"); ok || len(w.acks)+len(w.other) != 3 {
		t.Errorf("after 3 more ids: tombstone remembered %v, %d ids, want false, 3", ok, len(w.acks)+len(w.other))
	}
}
