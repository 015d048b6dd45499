package actors

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"charla/wire"
)

// Frames are counted by their type, unknown ones as other, and an encoded
// server frame by the type it starts with.
func TestFrameCounts(t *testing.T) {
	s := newStats(Histograms{})
	for _, typ := range []string{wire.TypeSend, wire.TypeSend, "teleport", wire.TypePing} {
		s.framesIn.add(typ)
	}
	for _, f := range [][]byte{wire.Encode(wire.Ack{Type: wire.TypeAck}), wire.Encode(wire.Pong{Type: wire.TypePong}), []byte(`not json`)} {
		s.framesOut.addEncoded(f)
	}
	for _, tc := range []struct {
		got  map[string]int64
		want map[string]int64
	}{
		{s.FramesIn(), map[string]int64{wire.TypeSend: 2, wire.TypePing: 1, OtherFrameType: 1}},
		{s.FramesOut(), map[string]int64{wire.TypeAck: 1, wire.TypePong: 1, OtherFrameType: 1}},
	} {
		if len(tc.got) != len(tc.want) {
			t.Errorf("counts %v, want %v", tc.got, tc.want)
		}
		for k, v := range tc.want {
			if tc.got[k] != v {
				t.Errorf("counts %v, want %v", tc.got, tc.want)
			}
		}
	}
}

// What metrics add to the hot path, per event: counting a frame in and
// one out (per frame), and per ack or pong a time.Since and a histogram
// observation, with the histograms on (prometheus) and off (nop).
func BenchmarkHotPathInstrumentation(b *testing.B) {
	frame := wire.Encode(wire.Ack{Type: wire.TypeAck, Conv: "c", ClientMsgID: "0e6f1f9e-1c2b-4a8e-9d5c-2f4b6a8c0d1e", Seq: 42})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: prometheus.DefBuckets})
	for _, bc := range []struct {
		name string
		h    Histograms
	}{{"histograms off", Histograms{}}, {"histograms on", Histograms{SendAck: hist}}} {
		s := newStats(bc.h)
		b.Run(bc.name+"/frame in+out", func(b *testing.B) {
			for b.Loop() {
				s.framesIn.add(wire.TypeSend)
				s.framesOut.addEncoded(frame)
			}
		})
		b.Run(bc.name+"/ack latency", func(b *testing.B) {
			at := time.Now()
			for b.Loop() {
				s.hist.SendAck.Observe(time.Since(at).Seconds())
			}
		})
		b.Run(bc.name+"/ack latency, 2 goroutines", func(b *testing.B) {
			at := time.Now()
			b.SetParallelism(1)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s.hist.SendAck.Observe(time.Since(at).Seconds())
				}
			})
		})
	}
}
