package transport_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/transport/transporttest"
	"charla/wire"
)

// A thousand waiting polls cost the HTTP server's own goroutines and
// nothing more: the poll session behind each is a conn actor (no
// goroutine), and the poll waits on a channel in its handler. One message
// then wakes every one of them.
func TestWaitingPollersCostNoGoroutineOfTheirOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 pollers")
	}
	e := transporttest.Start(t)
	const n = 1000
	for i := range n {
		p := e.PollClient(t, "watcher", charla.RoleAgent)
		p.Session = fmt.Sprintf("s%d", i)
		p.Cursors["lobby"] = 0
		for subscribed := false; !subscribed; {
			for _, f := range p.Poll(transporttest.Wait).Frames {
				subscribed = subscribed || f.Type == wire.TypeSubscribed
			}
		}
	}
	http.DefaultClient.CloseIdleConnections()
	settle := func(atLeast int) int {
		// Wait for the goroutine count to reach atLeast and then hold still
		// for 300 ms (a starved machine can hold it still earlier).
		deadline := time.Now().Add(transporttest.Wait)
		for runtime.NumGoroutine() < atLeast && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		last, still := runtime.NumGoroutine(), time.Now()
		for time.Since(still) < 300*time.Millisecond {
			time.Sleep(20 * time.Millisecond)
			if g := runtime.NumGoroutine(); g != last {
				last, still = g, time.Now()
			}
		}
		return last
	}
	mem := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	baseG, baseMem := settle(0), mem()

	// Raw connections: the client side costs no goroutine, so the count is
	// the server's alone.
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", e.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := fmt.Sprintf(`{"session":"s%d","cursors":{"lobby":0},"wait_ms":30000}`, i)
		fmt.Fprintf(c, "POST /v1/poll?user=watcher&role=agent HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", e.Addr, len(body), body)
		conns[i] = c
	}
	// Each waiting poll has at least its connection's goroutine.
	g, m := settle(baseG+n), mem()
	perG := float64(g-baseG) / n
	perMem := float64(int64(m)-int64(baseMem)) / n
	t.Logf("%d waiting polls: %+d goroutines (%.2f per poll), %+.1f KiB heap+stacks per poll (server and raw client connections)", n, g-baseG, perG, perMem/1024)
	// net/http serves each connection on one goroutine, which runs the
	// handler, plus one background reader once the body is read (it notices
	// a client that hangs up). The poll adds none.
	if perG > 2.1 {
		t.Errorf("%.2f goroutines per waiting poll, want at most net/http's 2", perG)
	}

	// One message wakes them all, each with the message.
	c := e.Dial(t, "ana", charla.RoleAgent)
	c.Send(transporttest.SendFrame("lobby", uuid.NewString(), "everyone", ""))
	c.NextOf(wire.TypeAck, transporttest.Wait)
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(transporttest.Wait))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("poller %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(b), `"type":"msg"`) || !strings.Contains(string(b), `"seq":1`) {
			t.Fatalf("poller %d: %d %s %v", i, resp.StatusCode, b, err)
		}
	}
}
