package actors

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"charla"
	"charla/wire"
)

// Stats are the engine's counters, written by actors and read by anyone
// (tests, /metrics, the bench). They are the one thing actors share, and
// only through atomics and a mutex-guarded map.
type Stats struct {
	ConnsActive atomic.Int64
	Connects    atomic.Int64
	MessagesIn  atomic.Int64 // messages accepted and stored

	ConversationsActive atomic.Int64 // conversation actors alive
	ConversationsLoaded atomic.Int64 // conversation actors that loaded their head from the store
	ConversationsIdled  atomic.Int64 // conversation actors unloaded: idle, or their load failed
	BotSessions         atomic.Int64 // chatbot session actors alive
	BotSessionsExpired  atomic.Int64 // chatbot session actors stopped (idle, or at shutdown)
	Duplicates          atomic.Int64 // sends answered as duplicate:true
	RTTCount            atomic.Int64 // heartbeat round trips measured
	RTTMicros           atomic.Int64 // their sum

	StoreWrites  atomic.Int64 // group commits (store or spool): MessagesIn/StoreWrites is the batch size
	StoreErrors  atomic.Int64 // group commits whose store write failed (spooled when a spool covers the outage)
	StoreBreaker atomic.Int32 // a BreakerState
	BreakerTrips atomic.Int64 // times the store's breaker opened
	SpoolDepth   atomic.Int64 // messages spooled and not yet drained
	Spooled      atomic.Int64 // messages ever acked from the spool
	Drained      atomic.Int64 // messages moved from the spool to the store
	DeadLetters  atomic.Int64 // spooled messages the store refused, kept aside in the spool (a tombstone holds their seq)

	SOAP     SOAPStats     // the inventory bridge (soap.go)
	Cluster  ClusterStats  // cluster mode (cluster.go); zero on a single node
	WhatsApp WhatsAppStats // the outbound WhatsApp channel (whatsapp.go)

	framesIn, framesOut frameCounts
	hist                Histograms // never nil fields (see newStats)

	mu          sync.Mutex
	disconnects map[string]int64 // by Disconnect.Label()
	errors      map[charla.Code]int64
	restarts    map[string]int64 // by restartLabel
}

// Observer takes one observation; a prometheus.Histogram is one.
type Observer interface{ Observe(float64) }

// Histograms are the distributions the tree measures on its hot paths,
// handed to it by whoever exports them (the metrics package); a nil field
// measures nothing and costs nothing.
type Histograms struct {
	HeartbeatRTT  Observer // seconds from a server ping to its pong
	SendAck       Observer // seconds from a send reaching its conn actor to its ack or error
	CommitSize    Observer // messages in one group commit (store or spool)
	CommitLatency Observer // seconds one group commit took (store or spool)
	SOAPCall      Observer // seconds one SOAP attempt took, failed ones included
}

type nopObserver struct{}

func (nopObserver) Observe(float64) {}

func (h Histograms) orNop() Histograms {
	for _, o := range []*Observer{&h.HeartbeatRTT, &h.SendAck, &h.CommitSize, &h.CommitLatency, &h.SOAPCall} {
		if *o == nil {
			*o = nopObserver{}
		}
	}
	return h
}

func newStats(h Histograms) *Stats {
	return &Stats{disconnects: map[string]int64{}, errors: map[charla.Code]int64{}, restarts: map[string]int64{},
		hist: h.orNop()}
}

// frameCounts counts frames by type: one atomic per type of wire.FrameTypes
// and one for anything else, so that counting takes no lock and a client
// cannot grow the label set with made-up types.
type frameCounts [len(wire.FrameTypes) + 1]atomic.Int64

// frameIndex maps a frame type to its counter; absent types count as other.
var frameIndex = func() map[string]int {
	m := make(map[string]int, len(wire.FrameTypes))
	for i, t := range wire.FrameTypes {
		m[t] = i
	}
	return m
}()

// OtherFrameType is the label of frames whose type is not in wire.FrameTypes.
const OtherFrameType = "other"

func (f *frameCounts) add(typ string) {
	i, ok := frameIndex[typ]
	if !ok {
		i = len(wire.FrameTypes)
	}
	f[i].Add(1)
}

// addEncoded counts an encoded server frame by the type it starts with.
func (f *frameCounts) addEncoded(frame []byte) {
	i, ok := frameIndex[string(wire.TypeOf(frame))] // no allocation: a map index by string(bytes)
	if !ok {
		i = len(wire.FrameTypes)
	}
	f[i].Add(1)
}

func (f *frameCounts) snapshot() map[string]int64 {
	out := make(map[string]int64, len(f))
	for i := range f {
		if n := f[i].Load(); n > 0 {
			if i < len(wire.FrameTypes) {
				out[wire.FrameTypes[i]] = n
			} else {
				out[OtherFrameType] = n
			}
		}
	}
	return out
}

// FramesIn returns how many client frames were handled, by type (frames of
// an unknown type count as OtherFrameType).
func (s *Stats) FramesIn() map[string]int64 { return s.framesIn.snapshot() }

// FramesOut returns how many server frames were queued for clients, by type.
func (s *Stats) FramesOut() map[string]int64 { return s.framesOut.snapshot() }

// restart counts an actor restarted by its supervisor, under a label of
// bounded cardinality: "conversation" for any conversation actor, the
// actor's path for the dependency actors ("deps/store").
func (s *Stats) restart(id string) {
	label := id
	if strings.HasPrefix(id, "conversations/") {
		label = "conversation"
	}
	s.mu.Lock()
	s.restarts[label]++
	s.mu.Unlock()
}

// Restarts returns how many actors were restarted after a panic, by actor.
func (s *Stats) Restarts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.restarts)
}

func (s *Stats) disconnect(d charla.Disconnect) {
	s.mu.Lock()
	s.disconnects[d.Label()]++
	s.mu.Unlock()
}

func (s *Stats) errorSent(code charla.Code) {
	s.mu.Lock()
	s.errors[code]++
	s.mu.Unlock()
}

func (s *Stats) observeRTT(d time.Duration) {
	s.RTTCount.Add(1)
	s.RTTMicros.Add(d.Microseconds())
	s.hist.HeartbeatRTT.Observe(d.Seconds())
}

// Disconnects returns how many connections closed for each reason.
func (s *Stats) Disconnects() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.disconnects)
}

// Errors returns how many error frames were sent for each code.
func (s *Stats) Errors() map[charla.Code]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.errors)
}
