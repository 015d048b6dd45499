package pebble

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"charla"
	"charla/store"
	"charla/store/bolt"
)

// The embedded engines side by side, in one run so that they are comparable
// (run with go test -run XXX -bench Append ./store/pebble/, on a real disk:
// TMPDIR must not be a tmpfs, or fsync costs nothing):
//
//   - bolt: store/bolt, one bbolt transaction per Append.
//   - pebble: this package, one batch and Commit(pebble.Sync) per Append.
//
// Each shape is a group commit of size messages spread over convs
// conversations, all new, from one appender (the store actor), as the
// postgres benchmark; Parallel4 runs four appenders on disjoint
// conversations, the saturating case in which pebble shares one fsync
// between commits. Reported: msgs/s, commit p50 and p99 (one Append call),
// and for pebble fsyncs/s and msgs/fsync from its WAL metrics.

// benchBody is a 300-byte chat message body, as in LIBRARY-NOTES.
var benchBody = []byte(`{"text":"` + strings.Repeat("hola, ¿tienen stock? ", 14)[:288] + `"}`)

// benchBatch is call's group commit of size messages over convs
// conversations, prefixed so that parallel appenders stay disjoint.
func benchBatch(prefix string, call, size, convs int) []charla.Message {
	msgs := make([]charla.Message, size)
	for i := range msgs {
		n := call*size + i
		msgs[i] = charla.Message{
			Conv:        charla.ConvID(fmt.Sprintf("%sconv-%d", prefix, n%convs)),
			ClientMsgID: fmt.Sprintf("%08x-0000-4000-8000-%012x", call, n),
			Sender:      charla.Sender{ID: "34600111222", Role: charla.RoleCustomer},
			Body:        benchBody,
		}
	}
	return msgs
}

// fsyncs returns how many WAL fsyncs s has done, from pebble's fsync latency
// histogram.
func fsyncs(b *testing.B, s *Store) uint64 {
	h, ok := s.db.Metrics().LogWriter.FsyncLatency.(prometheus.Metric)
	if !ok {
		return 0
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// benchEngines opens a fresh store of each engine.
var benchEngines = []struct {
	name string
	open func(b *testing.B) store.Store
}{
	{"bolt", func(b *testing.B) store.Store {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "charla.db"))
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
	{"pebble", func(b *testing.B) store.Store {
		// Production options (DefaultOptions), not the tests' small ones.
		o := DefaultOptions()
		o.Logger = testOptions(b).Logger
		s, err := Open(b.Context(), b.TempDir(), o)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
}

func BenchmarkAppend(b *testing.B) {
	shapes := []struct {
		size, convs, appenders int
	}{
		{1, 1, 1},
		{10, 100, 1},
		{100, 100, 1},
		{100, 1000, 1},
		{1000, 1000, 1},
		{100, 100, 4},
	}
	for _, sh := range shapes {
		for _, eng := range benchEngines {
			name := fmt.Sprintf("%s/%dmsgs-%dconvs", eng.name, sh.size, sh.convs)
			if sh.appenders > 1 {
				name = fmt.Sprintf("%s/Parallel%d-%dmsgs-%dconvs", eng.name, sh.appenders, sh.size, sh.convs)
			}
			b.Run(name, func(b *testing.B) {
				st := eng.open(b)
				defer st.Close()
				benchAppend(b, st, sh.size, sh.convs, sh.appenders)
			})
		}
	}
}

// benchAppend runs b.N Append calls of size messages over convs
// conversations, split between appenders goroutines, and reports the
// metrics.
func benchAppend(b *testing.B, st store.Store, size, convs, appenders int) {
	ctx := b.Context()
	ps, _ := st.(*Store)
	var syncs0 uint64
	if ps != nil {
		syncs0 = fsyncs(b, ps)
	}
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			}()
			prefix := fmt.Sprintf("a%d-", a)
			for {
				call := int(next.Add(1)) - 1
				if call >= b.N {
					return
				}
				msgs := benchBatch(prefix, call, size, convs)
				t0 := time.Now()
				if _, err := st.Append(ctx, msgs); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	msgs := float64(b.N * size)
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	if ps != nil {
		if n := fsyncs(b, ps) - syncs0; n > 0 {
			b.ReportMetric(float64(n)/elapsed.Seconds(), "fsyncs/s")
			b.ReportMetric(msgs/float64(n), "msgs/fsync")
		}
	}
}
