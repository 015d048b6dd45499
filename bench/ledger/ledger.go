// Package ledger is the bench's delivery accounting. PROTOCOL.md promises
// that every acked message reaches every subscriber exactly once and in seq
// order, and that a client_msg_id is accepted at most once per
// conversation; a bench run is only worth its figures if it checks that
// promise on every message it sent, so every ack and every delivery of a run
// goes through a Ledger and the run ends with its Report.
//
// A Ledger holds, per conversation, which seqs were acked and under which
// client_msg_id, and per subscription (one subscriber of one conversation,
// surviving reconnects) which seqs it has received. Memory is a bit per seq
// per subscription plus one id per acked message.
package ledger

import (
	"fmt"
	"math/bits"
	"sort"
	"sync"

	"charla"
)

// maxSeq bounds the bitsets: a seq beyond it cannot come from a bench run
// (it would take years at the goal rate) and is counted as a mismatch
// instead of allocating gigabytes.
const maxSeq = 1 << 28

// maxSamples is how many human-readable problem descriptions a report keeps.
const maxSamples = 20

// Outcome classifies one delivery to a subscription.
type Outcome int

// The outcomes of Sub.Deliver.
const (
	// Fresh is a seq seen for the first time, above every seq seen before.
	Fresh Outcome = iota
	// Late is a seq seen for the first time but below one already seen:
	// the order promise was broken.
	Late
	// Duplicate is a seq this subscription has already received.
	Duplicate
	// Invalid is a seq of 0 or beyond maxSeq.
	Invalid
)

type bitset []uint64

func (b *bitset) set(i charla.Seq) {
	w := int(i >> 6)
	if w >= len(*b) {
		n := make([]uint64, w+1, 2*(w+1))
		copy(n, *b)
		*b = n
	}
	(*b)[w] |= 1 << (i & 63)
}

func (b bitset) has(i charla.Seq) bool {
	w := int(i >> 6)
	return w < len(b) && b[w]&(1<<(i&63)) != 0
}

// Ledger is the accounting of one run. It is safe for concurrent use.
type Ledger struct {
	mu    sync.Mutex
	convs map[charla.ConvID]*book
	order []charla.ConvID

	samplesMu sync.Mutex
	samples   []string
	dropped   int
}

type book struct {
	mu        sync.Mutex
	acked     bitset
	ackCount  int64
	maxAcked  charla.Seq
	ids       map[charla.Seq]string // first client_msg_id witnessed per seq
	seqOf     map[string]charla.Seq // first seq witnessed per client_msg_id
	witnessed bitset                // seqs seen by any subscriber
	dupAcks   int64
	conflicts int64 // a seq witnessed under two client_msg_ids
	stored2x  int64 // a client_msg_id witnessed under two seqs
	subs      []*Sub
}

// New returns an empty ledger.
func New() *Ledger { return &Ledger{convs: map[charla.ConvID]*book{}} }

func (l *Ledger) book(conv charla.ConvID) *book {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.convs[conv]
	if b == nil {
		b = &book{ids: map[charla.Seq]string{}, seqOf: map[string]charla.Seq{}}
		l.convs[conv] = b
		l.order = append(l.order, conv)
	}
	return b
}

func (l *Ledger) sample(format string, args ...any) {
	l.samplesMu.Lock()
	defer l.samplesMu.Unlock()
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, fmt.Sprintf(format, args...))
	} else {
		l.dropped++
	}
}

// witness records that seq carries id in conv, and reports whether that
// agrees with everything seen before. The caller holds b.mu.
func (l *Ledger) witness(conv charla.ConvID, b *book, seq charla.Seq, id string, from string) {
	if id == "" {
		return
	}
	if prev, ok := b.ids[seq]; ok {
		if prev != id {
			b.conflicts++
			l.sample("conv %s: seq %d seen with client_msg_id %s and (%s) %s", conv, seq, prev, from, id)
		}
	} else {
		b.ids[seq] = id
	}
	if prev, ok := b.seqOf[id]; ok {
		if prev != seq {
			b.stored2x++
			l.sample("conv %s: client_msg_id %s stored twice, as seq %d and (%s) seq %d", conv, id, prev, from, seq)
		}
	} else {
		b.seqOf[id] = seq
	}
}

// Acked records an ack: the engine says client_msg_id id is durable as seq
// in conv. duplicate is the ack's "duplicate" flag (a resend of a message
// already accepted).
func (l *Ledger) Acked(conv charla.ConvID, seq charla.Seq, id string, duplicate bool) {
	b := l.book(conv)
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq == 0 || seq > maxSeq {
		b.conflicts++
		l.sample("conv %s: ack for client_msg_id %s has invalid seq %d", conv, id, seq)
		return
	}
	l.witness(conv, b, seq, id, "ack")
	if b.acked.has(seq) {
		b.dupAcks++
		return
	}
	if duplicate {
		b.dupAcks++
	}
	b.acked.set(seq)
	b.ackCount++
	b.maxAcked = max(b.maxAcked, seq)
}

// Sub is one subscriber's view of one conversation, from its first
// subscribe to the end of the run, across reconnects (a resubscribe with
// since = Last() continues the same Sub). It is safe for concurrent use,
// though deliveries normally come from one read loop.
type Sub struct {
	l     *Ledger
	b     *book
	conv  charla.ConvID
	label string
	since charla.Seq

	mu        sync.Mutex
	seen      bitset
	max       charla.Seq
	next      charla.Seq // lowest seq > since not yet seen
	count     int64
	dups      int64
	late      int64
	invalid   int64
	broken    bool
	brokenWhy string
}

// Subscribe registers a subscription to conv that expects every message
// with seq > since. label names the subscriber in problem reports.
func (l *Ledger) Subscribe(conv charla.ConvID, since charla.Seq, label string) *Sub {
	b := l.book(conv)
	s := &Sub{l: l, b: b, conv: conv, label: label, since: since, next: since + 1, max: since}
	b.mu.Lock()
	b.subs = append(b.subs, s)
	b.mu.Unlock()
	return s
}

// Conv is the subscription's conversation.
func (s *Sub) Conv() charla.ConvID { return s.conv }

// Deliver records a msg frame received by this subscription and classifies it.
func (s *Sub) Deliver(seq charla.Seq, clientMsgID string) Outcome {
	if seq == 0 || seq > maxSeq {
		s.mu.Lock()
		s.invalid++
		s.mu.Unlock()
		s.l.sample("conv %s %s: invalid seq %d", s.conv, s.label, seq)
		return Invalid
	}
	s.b.mu.Lock()
	s.l.witness(s.conv, s.b, seq, clientMsgID, "msg to "+s.label)
	s.b.witnessed.set(seq)
	s.b.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	switch {
	case seq <= s.since || s.seen.has(seq):
		s.dups++
		if s.dups <= 3 {
			s.l.sample("conv %s %s: seq %d delivered again", s.conv, s.label, seq)
		}
		return Duplicate
	case seq < s.max:
		s.seen.set(seq)
		s.late++
		if s.late <= 3 {
			s.l.sample("conv %s %s: seq %d arrived after seq %d", s.conv, s.label, seq, s.max)
		}
		s.advance()
		return Late
	default:
		s.seen.set(seq)
		s.max = seq
		s.advance()
		return Fresh
	}
}

// advance moves next past every seq already seen. The caller holds s.mu.
func (s *Sub) advance() {
	for n := 0; n < maxSeq && s.seen.has(s.next); n++ {
		s.next++
	}
}

// Last is the highest seq this subscription has received (or its initial
// since): what a reconnecting client passes as since, as charla.js does.
func (s *Sub) Last() charla.Seq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// Break marks the subscription as ended by the client side (it gave up
// reconnecting, or was meant to be dropped, as a slow consumer is): the
// engine owes it nothing more, so its missing messages are not counted as
// lost. The reason is kept for the report.
func (s *Sub) Break(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.broken {
		s.broken, s.brokenWhy = true, reason
	}
}

// missing is how many acked seqs (as of maxAcked) the subscription still
// lacks; for a cheap progress check it only looks past the contiguous
// prefix. The caller holds neither lock.
func (s *Sub) missing(maxAcked charla.Seq) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken || s.next > maxAcked {
		return 0
	}
	return int64(maxAcked - s.next + 1)
}

// Outstanding is an upper bound of the deliveries still owed to live
// subscriptions for the messages acked so far; 0 means every subscription
// has everything, which is when a drain may stop waiting.
func (l *Ledger) Outstanding() int64 {
	l.mu.Lock()
	books := make([]*book, 0, len(l.convs))
	for _, b := range l.convs {
		books = append(books, b)
	}
	l.mu.Unlock()
	var n int64
	for _, b := range books {
		b.mu.Lock()
		maxAcked := b.maxAcked
		subs := append([]*Sub(nil), b.subs...)
		b.mu.Unlock()
		for _, s := range subs {
			n += s.missing(maxAcked)
		}
	}
	return n
}

// Report is the verdict of a run's accounting. Lost, Duplicated,
// Reordered and Mismatched must all be zero for the engine to have kept
// its promises.
type Report struct {
	Conversations       int   `json:"conversations"`
	Subscriptions       int   `json:"subscriptions"`
	BrokenSubscriptions int   `json:"broken_subscriptions"`
	Acked               int64 `json:"acked"`
	DuplicateAcks       int64 `json:"duplicate_acks"`
	Delivered           int64 `json:"delivered"`
	// Lost counts (subscription, acked seq) pairs never delivered.
	Lost int64 `json:"lost"`
	// Duplicated counts deliveries of a seq a subscription already had,
	// plus messages stored twice (one client_msg_id under two seqs).
	Duplicated int64 `json:"duplicated"`
	// Reordered counts deliveries that arrived after a higher seq.
	Reordered int64 `json:"reordered"`
	// Mismatched counts seqs seen with two different client_msg_ids and
	// invalid seqs.
	Mismatched int64 `json:"mismatched"`
	// UnackedDelivered counts seqs delivered to someone but never acked to
	// the bench (e.g. the sender lost its connection before the ack): not
	// an error, since the sender would resend and get duplicate:true.
	UnackedDelivered int64    `json:"unacked_delivered"`
	Samples          []string `json:"samples,omitempty"`
}

// OK reports whether the engine kept every delivery promise.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 && r.Mismatched == 0
}

// Report computes the verdict. Call it once deliveries have stopped or
// been drained; it may be called more than once.
func (l *Ledger) Report() Report {
	l.mu.Lock()
	order := append([]charla.ConvID(nil), l.order...)
	sort.Slice(order, func(i, j int) bool { return order[i] < order[j] })
	books := make([]*book, len(order))
	for i, c := range order {
		books[i] = l.convs[c]
	}
	l.mu.Unlock()

	var r Report
	var lostSamples []string
	r.Conversations = len(books)
	for i, b := range books {
		conv := order[i]
		b.mu.Lock()
		r.Acked += b.ackCount
		r.DuplicateAcks += b.dupAcks
		r.Mismatched += b.conflicts
		r.Duplicated += b.stored2x
		for w, word := range b.witnessed {
			var ackedWord uint64
			if w < len(b.acked) {
				ackedWord = b.acked[w]
			}
			r.UnackedDelivered += int64(bits.OnesCount64(word &^ ackedWord))
		}
		acked := b.acked
		maxAcked := b.maxAcked
		subs := append([]*Sub(nil), b.subs...)
		b.mu.Unlock()

		for _, s := range subs {
			s.mu.Lock()
			r.Subscriptions++
			r.Delivered += s.count
			r.Duplicated += s.dups
			r.Reordered += s.late
			r.Mismatched += s.invalid
			if s.broken {
				r.BrokenSubscriptions++
				s.mu.Unlock()
				continue
			}
			var lost int64
			var first, last charla.Seq
			for seq := s.next; seq <= maxAcked; seq++ {
				if acked.has(seq) && !s.seen.has(seq) {
					lost++
					if first == 0 {
						first = seq
					}
					last = seq
				}
			}
			s.mu.Unlock()
			if lost > 0 {
				r.Lost += lost
				if len(lostSamples) < maxSamples {
					lostSamples = append(lostSamples, fmt.Sprintf("conv %s %s: %d acked messages never delivered (seq %d..%d, since %d)", conv, s.label, lost, first, last, s.since))
				}
			}
		}
	}
	l.samplesMu.Lock()
	r.Samples = append(append([]string(nil), l.samples...), lostSamples...)
	if l.dropped > 0 {
		r.Samples = append(r.Samples, fmt.Sprintf("… and %d more problems", l.dropped))
	}
	l.samplesMu.Unlock()
	return r
}

// AckedMessages returns, for conv, every acked seq with the client_msg_id
// first witnessed for it: what an end-of-run check against the store of
// record (PostgreSQL in a cluster) must find there.
func (l *Ledger) AckedMessages(conv charla.ConvID) map[charla.Seq]string {
	l.mu.Lock()
	b := l.convs[conv]
	l.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[charla.Seq]string, b.ackCount)
	for seq := charla.Seq(1); seq <= b.maxAcked; seq++ {
		if b.acked.has(seq) {
			out[seq] = b.ids[seq]
		}
	}
	return out
}
