package actors

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"charla"
)

// Stats are the engine's counters, written by actors and read by anyone
// (tests, /metrics, the bench). They are the one thing actors share, and
// only through atomics and a mutex-guarded map.
type Stats struct {
	ConnsActive atomic.Int64
	Connects    atomic.Int64
	MessagesIn  atomic.Int64 // messages accepted and stored

	ConversationsActive atomic.Int64 // conversation actors alive
	ConversationsIdled  atomic.Int64 // conversation actors unloaded: idle, or their load failed
	BotSessions         atomic.Int64 // chatbot session actors alive
	BotSessionsExpired  atomic.Int64 // chatbot session actors stopped (idle, or at shutdown)
	Duplicates          atomic.Int64 // sends answered as duplicate:true
	RTTCount            atomic.Int64 // heartbeat round trips measured
	RTTMicros           atomic.Int64 // their sum

	StoreWrites  atomic.Int64 // group commits (store or spool): MessagesIn/StoreWrites is the batch size
	StoreBreaker atomic.Int32 // a BreakerState
	BreakerTrips atomic.Int64 // times the store's breaker opened
	SpoolDepth   atomic.Int64 // messages spooled and not yet drained
	Spooled      atomic.Int64 // messages ever acked from the spool
	Drained      atomic.Int64 // messages moved from the spool to the store
	DeadLetters  atomic.Int64 // spooled messages the store refused, kept aside in the spool (a tombstone holds their seq)

	SOAP SOAPStats // the inventory bridge (soap.go)

	mu          sync.Mutex
	disconnects map[string]int64 // by Disconnect.Label()
	errors      map[charla.Code]int64
}

func newStats() *Stats {
	return &Stats{disconnects: map[string]int64{}, errors: map[charla.Code]int64{}}
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
