package actors

import (
	"time"

	"charla"
)

// dedupWindow is a conversation's memory of the last client_msg_ids it
// accepted, with their acks, so that a resend is answered without a store
// call; the oldest is forgotten first. The store dedups durably behind it,
// so forgetting only costs a store round trip.
//
// It holds no pointers for the canonical UUIDs that clients send: a busy
// engine keeps a thousand ids per conversation, and as strings in a linked
// LRU they were most of the objects the garbage collector traced (about
// three per id; on one core every GC cycle then slowed the conversations
// for tens of milliseconds). Keyed by their 16 bytes, the map and the ring
// are single pointer-free objects. Ids in another form (a tombstone's
// "…#deleted") keep their string, in other.
type dedupWindow struct {
	max   int
	ring  []dedupSlot // insertion order; once full, next is the oldest
	next  int
	acks  map[dedupKey]dedupAck
	other map[string]dedupAck
}

// dedupKey is a client_msg_id in canonical UUID form, exactly: the store
// compares ids as strings, so "A" and "a" in the same place are different
// ids, and upper records which of the 32 hex digits were upper case.
type dedupKey struct {
	uuid  [16]byte
	upper uint32
}

// dedupSlot is one remembered id: its key, or its string when it is not a
// canonical UUID.
type dedupSlot struct {
	key   dedupKey
	other string
}

// dedupAck is an ackInfo without time.Time's location pointer.
type dedupAck struct {
	seq charla.Seq
	ts  int64 // Unix nanoseconds
}

func newDedupWindow(max int) *dedupWindow {
	return &dedupWindow{max: max, acks: make(map[dedupKey]dedupAck), other: make(map[string]dedupAck)}
}

// get returns the ack of cmid, if it is remembered.
func (w *dedupWindow) get(cmid string) (ackInfo, bool) {
	var a dedupAck
	var ok bool
	if k, isUUID := uuidKey(cmid); isUUID {
		a, ok = w.acks[k]
	} else {
		a, ok = w.other[cmid]
	}
	if !ok {
		return ackInfo{}, false
	}
	return ackInfo{seq: a.seq, ts: time.Unix(0, a.ts).UTC()}, true
}

// add remembers cmid's ack, forgetting the oldest id when the window is
// full; an id already remembered keeps its place.
func (w *dedupWindow) add(cmid string, a ackInfo) {
	v := dedupAck{seq: a.seq, ts: a.ts.UnixNano()}
	k, isUUID := uuidKey(cmid)
	slot := dedupSlot{key: k}
	if isUUID {
		if _, ok := w.acks[k]; ok {
			w.acks[k] = v
			return
		}
		w.acks[k] = v
	} else {
		if _, ok := w.other[cmid]; ok {
			w.other[cmid] = v
			return
		}
		w.other[cmid] = v
		slot.other = cmid
	}
	if len(w.ring) < w.max {
		w.ring = append(w.ring, slot)
		return
	}
	old := w.ring[w.next]
	if old.other != "" {
		delete(w.other, old.other)
	} else {
		delete(w.acks, old.key)
	}
	w.ring[w.next] = slot
	w.next = (w.next + 1) % w.max
}

// uuidKey is the key of a client_msg_id in canonical UUID form.
func uuidKey(s string) (dedupKey, bool) {
	uuid, upper, ok := charla.ParseClientMsgID(s)
	return dedupKey{uuid: uuid, upper: upper}, ok
}
