package actors

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"charla"
)

// pipeSocket is a Socket whose writes block until the test lets them
// through, so the test decides when the writer is busy.
type pipeSocket struct {
	mu      sync.Mutex
	frames  []string
	gate    chan struct{}
	entered chan struct{} // a write has started
	fail    error
}

func (p *pipeSocket) Async(f func()) { go f() }
func (p *pipeSocket) WriteFrame(b []byte) error {
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	<-p.gate
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frames = append(p.frames, string(b))
	return p.fail
}
func (p *pipeSocket) Ping()                   {}
func (p *pipeSocket) Close(charla.Disconnect) {}
func (p *pipeSocket) written() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.frames...)
}

func TestOutbox(t *testing.T) {
	t.Run("frames queued behind a write go out together, in order", func(t *testing.T) {
		s := &pipeSocket{gate: make(chan struct{}), entered: make(chan struct{}, 4)}
		signals := make(chan struct{}, 4)
		o := &outbox{sock: s, maxFrames: 8, maxBytes: 1 << 20, signal: func() { signals <- struct{}{} }}
		o.push([]byte(`{"n":1}`))
		<-s.entered // the first frame is being written
		for i := 2; i <= 4; i++ {
			if !o.push([]byte(`{"n":` + string(rune('0'+i)) + `}`)) {
				t.Fatal("push refused under the cap")
			}
		}
		if o.arm(true) {
			t.Fatal("arm(true) says empty with four frames pending")
		}
		close(s.gate)
		select {
		case <-signals:
		case <-time.After(5 * time.Second):
			t.Fatal("no signal once the queue emptied")
		}
		got := s.written()
		want := []string{`{"n":1}`, "{\"n\":2}\n{\"n\":3}\n{\"n\":4}"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("written %q, want %q", got, want)
		}
		if o.pending() != 0 || !o.arm(true) {
			t.Fatal("not empty after the drain")
		}
	})
	t.Run("the cap counts the frame being written", func(t *testing.T) {
		s := &pipeSocket{gate: make(chan struct{})}
		o := &outbox{sock: s, maxFrames: 3, maxBytes: 1 << 20, signal: func() {}}
		for i := range 3 {
			if !o.push([]byte("x")) {
				t.Fatalf("push %d refused", i)
			}
		}
		if o.push([]byte("x")) {
			t.Fatal("a fourth frame was accepted over a cap of three")
		}
		byBytes := &outbox{sock: s, maxFrames: 100, maxBytes: 10, signal: func() {}}
		if !byBytes.push([]byte("12345")) || byBytes.push([]byte("123456")) {
			t.Fatal("byte cap not enforced")
		}
		close(s.gate)
	})
	t.Run("after a failed write frames are dropped, not queued", func(t *testing.T) {
		s := &pipeSocket{gate: make(chan struct{}), fail: errors.New("broken pipe")}
		o := &outbox{sock: s, maxFrames: 2, maxBytes: 1 << 20, signal: func() {}}
		close(s.gate)
		o.push([]byte("a"))
		deadline := time.Now().Add(5 * time.Second)
		for o.pending() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		for range 10 {
			if !o.push([]byte("b")) {
				t.Fatal("a broken socket must not look like a slow consumer")
			}
		}
	})
}
