package transporttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/transport"
	"charla/wire"
)

// HTTPURL is the http:// URL of path (which may carry a query) for a
// dev-auth user.
func (e *Engine) HTTPURL(path, user string, role charla.Role) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return fmt.Sprintf("http://%s%s%suser=%s&role=%s", e.Addr, path, sep, url.QueryEscape(user), role)
}

// Do sends an HTTP request with a JSON body (nil for none; []byte and
// string as they are, anything else marshalled) and returns the status and
// the body. It fails the test only when the request cannot be made.
func Do(t testing.TB, method, u string, body any, header http.Header) (int, []byte) {
	t.Helper()
	resp, data := roundTrip(t, method, u, body, header, true)
	return resp.StatusCode, data
}

// roundTrip makes one request and reads the whole answer. body is sent as
// is when it is []byte, a string or an io.Reader, else JSON-encoded;
// jsonType labels a body application/json unless header names a type.
func roundTrip(t testing.TB, method, u string, body any, header http.Header, jsonType bool) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal request: %v", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil && jsonType && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp, data
}

// DoJSON is Do that decodes the answer into out (when not nil) and fails
// the test unless the status is want.
func DoJSON(t testing.TB, method, u string, body any, want int, out any) {
	t.Helper()
	status, data := Do(t, method, u, body, nil)
	if status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, u, status, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, u, data, err)
		}
	}
}

// PollClient is a long-polling client of protocol v1 (POST /v1/poll,
// /v1/send, /v1/frames) that keeps, as charla.js does, its session id and
// the last seq it has seen of each conversation it follows.
type PollClient struct {
	// Session is the poll session id; the first poll's answer sets it.
	Session string
	// Cursors are the conversations followed, with the last seq seen; Poll
	// moves them on.
	Cursors map[charla.ConvID]charla.Seq

	e    *Engine
	t    testing.TB
	user string
	role charla.Role
}

// PollClient returns a poll client of user with role (dev auth) that
// follows nothing yet.
func (e *Engine) PollClient(t testing.TB, user string, role charla.Role) *PollClient {
	return &PollClient{e: e, t: t, user: user, role: role, Cursors: map[charla.ConvID]charla.Seq{}}
}

// PollAnswer is a poll's answer, its frames decoded.
type PollAnswer struct {
	Session string
	Frames  []wire.Frame
	Closed  *transport.PollClosed
}

// PollRaw does one poll with the given cursors and wait, changing nothing
// in the client (a test may so "lose" an answer).
func (p *PollClient) PollRaw(cursors map[charla.ConvID]charla.Seq, wait time.Duration) PollAnswer {
	p.t.Helper()
	waitMS := wait.Milliseconds()
	req := transport.PollRequest{Session: p.Session, Cursors: cursors, WaitMS: &waitMS}
	var resp transport.PollResponse
	DoJSON(p.t, http.MethodPost, p.e.HTTPURL("/v1/poll", p.user, p.role), req, http.StatusOK, &resp)
	a := PollAnswer{Session: resp.Session, Closed: resp.Closed}
	for _, raw := range resp.Frames {
		f, err := wire.Decode(raw)
		if err != nil {
			p.t.Fatalf("poll answer holds an invalid frame %s: %v", raw, err)
		}
		a.Frames = append(a.Frames, f)
	}
	return a
}

// Poll polls with the client's cursors and moves them on: to each msg's seq,
// and down to a subscribed frame's since when the engine clamped it.
func (p *PollClient) Poll(wait time.Duration) PollAnswer {
	p.t.Helper()
	a := p.PollRaw(p.Cursors, wait)
	p.Session = a.Session
	for _, f := range a.Frames {
		switch f.Type {
		case wire.TypeMsg:
			if _, ok := p.Cursors[f.Conv]; ok {
				p.Cursors[f.Conv] = f.Seq
			}
		case wire.TypeSubscribed:
			if cur, ok := p.Cursors[f.Conv]; ok && f.Since < cur {
				p.Cursors[f.Conv] = f.Since
			}
		}
	}
	return a
}

// Send posts a send frame to /v1/send and returns the status and the
// answer (an ack, or an error frame).
func (p *PollClient) Send(f wire.Frame) (int, wire.Frame) {
	p.t.Helper()
	status, body := Do(p.t, http.MethodPost, p.e.HTTPURL("/v1/send", p.user, p.role), f, nil)
	var ans wire.Frame
	if err := json.Unmarshal(body, &ans); err != nil {
		p.t.Fatalf("/v1/send answered %d %s: %v", status, body, err)
	}
	return status, ans
}

// Frames posts client frames to /v1/frames for the client's session and
// returns the status.
func (p *PollClient) Frames(frames ...wire.Frame) int {
	p.t.Helper()
	req := map[string]any{"session": p.Session, "frames": frames}
	status, _ := Do(p.t, http.MethodPost, p.e.HTTPURL("/v1/frames", p.user, p.role), req, nil)
	return status
}
