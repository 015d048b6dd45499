package actors

import (
	"sync"
)

// poolDispatcher runs actor mailboxes on long-lived worker goroutines
// instead of protoactor's goroutine per activation. A conn actor is
// activated for nearly every frame it handles; a fresh goroutine each time
// costs its creation and, above all, the growth of its stack on the first
// deep call (measured at a seventh of the engine's CPU under chat load).
// Actors of this engine never block (I/O runs elsewhere), so a small pool
// cannot starve; when every worker is busy it falls back to a goroutine.
type poolDispatcher struct {
	work       chan func()
	throughput int
	wg         sync.WaitGroup
	mu         sync.RWMutex // closed and the channel's close
	closed     bool
}

func newPoolDispatcher(workers, throughput int) *poolDispatcher {
	d := &poolDispatcher{work: make(chan func(), workers*64), throughput: throughput}
	d.wg.Add(workers)
	for range workers {
		go func() {
			defer d.wg.Done()
			for fn := range d.work {
				fn()
			}
		}()
	}
	return d
}

func (d *poolDispatcher) Schedule(fn func()) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		go fn() // a straggler after shutdown still runs, off the pool
		return
	}
	select {
	case d.work <- fn:
	default:
		go fn()
	}
}

func (d *poolDispatcher) Throughput() int { return d.throughput }

// close stops the workers once the actor system is down.
func (d *poolDispatcher) close() {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.work)
	}
	d.mu.Unlock()
	d.wg.Wait()
}
