package actors

import (
	"sync"
)

// outbox is one connection's outbound queue. Its conn actor pushes frames;
// the socket's writer writes them out, everything queued at each wake-up as
// one WebSocket frame ('\n'-separated objects), and keeps going until the
// queue is empty — so a busy connection pays one write per round trip of its
// socket, and no write costs the actor a message. It is the one piece of a
// conn's state shared with another goroutine, hence its mutex.
type outbox struct {
	sock      Socket
	maxFrames int
	maxBytes  int
	// signal tells the conn actor that the queue fell to half its cap or
	// emptied, once per arm(): a paused replay or a shutdown waits on it.
	signal func()
	write  func() // writeOut, bound once; only push uses it

	mu       sync.Mutex
	frames   [][]byte
	bytes    int
	writing  bool // writeOut is running or scheduled
	inFrames int  // frames in the write under way
	inBytes  int
	armed    bool
	broken   bool // a write failed: the socket is going away
}

// push queues a frame. It reports false when the frame would take the queue
// past its cap: the client is not reading, and must be closed.
func (o *outbox) push(frame []byte) bool {
	o.mu.Lock()
	if o.broken {
		o.mu.Unlock()
		return true // dropped: the socket is gone and the conn will stop
	}
	if len(o.frames)+o.inFrames+1 > o.maxFrames || o.bytes+o.inBytes+len(frame) > o.maxBytes {
		o.mu.Unlock()
		return false
	}
	o.frames = append(o.frames, frame)
	o.bytes += len(frame)
	start := !o.writing
	o.writing = true
	o.mu.Unlock()
	if start {
		if o.write == nil {
			o.write = o.writeOut // a method value allocates: once, not per write
		}
		o.sock.Async(o.write)
	}
	return true
}

// writeOut runs on the socket's writer until the queue is empty.
func (o *outbox) writeOut() {
	for {
		o.mu.Lock()
		if len(o.frames) == 0 || o.broken {
			o.writing = false
			notify := o.armed
			o.armed = false
			o.mu.Unlock()
			if notify {
				o.signal()
			}
			return
		}
		var frame []byte
		var joined *[]byte
		if len(o.frames) == 1 {
			frame = o.frames[0]
		} else {
			joined = joinFrames(o.frames)
			frame = *joined
		}
		o.inFrames, o.inBytes = len(o.frames), o.bytes
		clear(o.frames)
		o.frames, o.bytes = o.frames[:0], 0
		o.mu.Unlock()

		err := o.sock.WriteFrame(frame)
		if joined != nil {
			joinBufs.Put(joined) // the socket copied it into its own frame
		}

		o.mu.Lock()
		o.inFrames, o.inBytes = 0, 0
		o.broken = err != nil
		notify := o.armed && len(o.frames) <= o.maxFrames/2
		if notify {
			o.armed = false
		}
		o.mu.Unlock()
		if notify {
			o.signal()
		}
	}
}

// joinBufs recycles the buffers of joined writes: a busy connection's ack
// and message usually leave together, and a fresh buffer for each such
// write was a sixteenth of what the engine allocated at 10,000 msg/s.
var joinBufs = sync.Pool{New: func() any { return new([]byte) }}

// joinFrames joins frames with '\n' into a buffer from joinBufs.
func joinFrames(frames [][]byte) *[]byte {
	buf := joinBufs.Get().(*[]byte)
	b := (*buf)[:0]
	for i, f := range frames {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, f...)
	}
	*buf = b
	return buf
}

// pending is how many frames are queued or being written.
func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.frames) + o.inFrames
}

// arm asks for one signal when the queue falls to half its cap (or empties);
// it reports whether that is already the case, in which case no signal comes.
func (o *outbox) arm(empty bool) (already bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.frames) + o.inFrames
	if (empty && n == 0 && !o.writing) || (!empty && n <= o.maxFrames/2) {
		return true
	}
	o.armed = true
	return false
}
