package soapbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"charla/soapbridge"
	"charla/soapbridge/soapsim"
)

// sim is a simulator served over real HTTP on 127.0.0.1, and a client for it.
type sim struct {
	srv    *soapsim.Server
	ts     *httptest.Server
	client *soapbridge.Client

	mu       sync.Mutex
	requests [][]byte // request bodies, as the client sent them
	headers  []http.Header
}

func newSim(t *testing.T, so soapsim.Options, co soapbridge.Options) *sim {
	t.Helper()
	if so.Items == nil && so.CatalogueSize == 0 {
		so.CatalogueSize = 200 // fast; the 10,000-item default is tested in soapsim
	}
	srv, err := soapsim.New(so)
	if err != nil {
		t.Fatalf("soapsim.New: %v", err)
	}
	s := &sim{srv: srv}
	h := srv.Handler()
	s.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/" {
			body, _ := io.ReadAll(r.Body)
			s.mu.Lock()
			s.requests = append(s.requests, body)
			s.headers = append(s.headers, r.Header.Clone())
			s.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	// Cleanups run last-in first-out: release hanging handlers, then close
	// the server (which waits for them), then the client's idle connections.
	t.Cleanup(s.ts.Close)
	t.Cleanup(srv.Close)
	s.client, err = soapbridge.New(s.ts.URL+"/", co)
	if err != nil {
		t.Fatalf("soapbridge.New: %v", err)
	}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

func (s *sim) lastRequest() ([]byte, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return nil, nil
	}
	return s.requests[len(s.requests)-1], s.headers[len(s.headers)-1]
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestGetStock(t *testing.T) {
	s := newSim(t, soapsim.Options{}, soapbridge.Options{})
	want := soapsim.Generate(1, 200)[41]
	got, err := s.client.GetStock(ctxTimeout(t, 5*time.Second), "SKU-00042")
	if err != nil {
		t.Fatalf("GetStock: %v", err)
	}
	if got != want {
		t.Errorf("GetStock = %+v, want %+v", got, want)
	}
	body, h := s.lastRequest()
	if ct := h.Get("Content-Type"); ct != "text/xml; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a := h.Get("SOAPAction"); a != `"urn:charla:inventory:v1/GetStock"` {
		t.Errorf("SOAPAction = %q", a)
	}
	if !bytes.Contains(body, []byte("<sku>SKU-00042</sku>")) {
		t.Errorf("request body %s", body)
	}

	_, err = s.client.GetStock(ctxTimeout(t, 5*time.Second), "SKU-99999")
	if !errors.Is(err, soapbridge.ErrUnknownSKU) || !errors.Is(err, soapbridge.ErrClientFault) || soapbridge.Retryable(err) {
		t.Errorf("unknown SKU: %v", err)
	}
	var f *soapbridge.Fault
	if !errors.As(err, &f) || f.Code != "soap:Client" || f.Reason != soapbridge.ReasonUnknownSKU {
		t.Errorf("unknown SKU fault: %#v", f)
	}
}

func TestSearchProducts(t *testing.T) {
	items := []soapbridge.Item{
		{SKU: "A-1", Name: "Blue Mug", Quantity: 3, Warehouse: "W"},
		{SKU: "A-2", Name: "Red Mug", Quantity: 0, Warehouse: "W"},
		{SKU: "A-3", Name: "Blue Lamp", Quantity: 7, Warehouse: "W"},
		{SKU: "B-1", Name: "Green mug", Quantity: 1, Warehouse: "W"},
		{SKU: "B-2", Name: "Chair", Quantity: 9, Warehouse: "W"},
	}
	s := newSim(t, soapsim.Options{Items: items}, soapbridge.Options{PageSize: 2})
	cases := []struct {
		query   string
		page    int
		skus    string
		total   int
		hasNext bool
	}{
		{"mug", 1, "A-1 A-2", 3, true},
		{"MUG", 2, "B-1", 3, false},
		{"mug", 3, "", 3, false},
		{"", 3, "B-2", 5, false},
		{"blue", 1, "A-1 A-3", 2, false},
		{"b-", 1, "B-1 B-2", 2, false},
		{"nothing", 1, "", 0, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.query, tc.page), func(t *testing.T) {
			p, err := s.client.SearchProducts(ctxTimeout(t, 5*time.Second), tc.query, tc.page)
			if err != nil {
				t.Fatalf("SearchProducts: %v", err)
			}
			var skus []string
			for _, pr := range p.Products {
				skus = append(skus, pr.SKU)
			}
			if got := strings.Join(skus, " "); got != tc.skus || p.Total != tc.total || p.Page != tc.page || p.PageSize != 2 || p.HasNext() != tc.hasNext {
				t.Errorf("got %q total %d page %d size %d next %v; want %q total %d next %v",
					got, p.Total, p.Page, p.PageSize, p.HasNext(), tc.skus, tc.total, tc.hasNext)
			}
		})
	}
	if _, err := s.client.SearchProducts(context.Background(), "x", 0); soapbridge.KindOf(err) != soapbridge.KindClientFault {
		t.Errorf("page 0: %v", err)
	}
}

func TestReserveItemIdempotent(t *testing.T) {
	items := []soapbridge.Item{{SKU: "A", Name: "Mug", Quantity: 10, Warehouse: "W"}}
	s := newSim(t, soapsim.Options{Items: items}, soapbridge.Options{})
	ctx := ctxTimeout(t, 10*time.Second)

	r1, err := s.client.ReserveItem(ctx, "A", 4, "res-1")
	if err != nil {
		t.Fatalf("ReserveItem: %v", err)
	}
	if r1.Remaining != 6 || r1.Quantity != 4 || r1.SKU != "A" || r1.ReservationID != "res-1" || r1.ReservedAt.IsZero() {
		t.Errorf("first reservation %+v", r1)
	}
	r2, err := s.client.ReserveItem(ctx, "A", 4, "res-1")
	if err != nil || r2 != r1 {
		t.Errorf("repeated reservation = %+v, %v; want %+v", r2, err, r1)
	}
	if it, _ := s.client.GetStock(ctx, "A"); it.Quantity != 6 {
		t.Errorf("stock after a repeated reservation = %d, want 6", it.Quantity)
	}

	cases := []struct {
		name   string
		sku    string
		qty    int
		id     string
		is     error
		reason string
		sent   bool
	}{
		{"insufficient", "A", 7, "res-2", soapbridge.ErrInsufficientStock, soapbridge.ReasonInsufficientStock, true},
		{"unknown sku", "Z", 1, "res-3", soapbridge.ErrUnknownSKU, soapbridge.ReasonUnknownSKU, true},
		{"id reused for another request", "A", 1, "res-1", soapbridge.ErrClientFault, soapbridge.ReasonReservationConflict, true},
		{"zero quantity", "A", 0, "res-4", soapbridge.ErrClientFault, "", false},
		{"no id", "A", 1, "", soapbridge.ErrClientFault, "", false},
		{"no sku", "", 1, "res-5", soapbridge.ErrClientFault, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.srv.Stats().Total
			_, err := s.client.ReserveItem(ctx, tc.sku, tc.qty, tc.id)
			if !errors.Is(err, tc.is) || soapbridge.Retryable(err) {
				t.Fatalf("err = %v, want %v and not retryable", err, tc.is)
			}
			var f *soapbridge.Fault
			if (tc.reason != "") != errors.As(err, &f) || (f != nil && f.Reason != tc.reason) {
				t.Errorf("fault = %+v, want reason %q", f, tc.reason)
			}
			if sent := s.srv.Stats().Total > before; sent != tc.sent {
				t.Errorf("request sent = %v, want %v", sent, tc.sent)
			}
		})
	}
	if it, _ := s.client.GetStock(ctx, "A"); it.Quantity != 6 {
		t.Errorf("stock after refused reservations = %d, want 6", it.Quantity)
	}
}

// TestFaultModes checks that every simulated fault reaches the caller as the
// right kind of error, within the context deadline plus a margin that holds
// on a loaded 2-core machine.
func TestFaultModes(t *testing.T) {
	cases := []struct {
		name      string
		faults    soapsim.FaultSet
		deadline  time.Duration
		kind      soapbridge.Kind // 0: success
		status    int
		timeout   bool
		retryable bool
		minTime   time.Duration
	}{
		{name: "none", deadline: 5 * time.Second},
		{name: "latency within deadline", faults: soapsim.FaultSet{LatencyMS: 100, JitterMS: 20}, deadline: 5 * time.Second, minTime: 80 * time.Millisecond},
		{name: "latency past deadline", faults: soapsim.FaultSet{LatencyMS: 5000}, deadline: 200 * time.Millisecond, kind: soapbridge.KindTransport, timeout: true, retryable: true},
		{name: "hang", faults: soapsim.FaultSet{Hang: 1}, deadline: 200 * time.Millisecond, kind: soapbridge.KindTransport, timeout: true, retryable: true},
		{name: "reset", faults: soapsim.FaultSet{Reset: 1}, deadline: 5 * time.Second, kind: soapbridge.KindTransport, retryable: true},
		{name: "http 500", faults: soapsim.FaultSet{HTTP500: 1}, deadline: 5 * time.Second, kind: soapbridge.KindTransport, status: 500, retryable: true},
		{name: "soap fault", faults: soapsim.FaultSet{SOAPFault: 1}, deadline: 5 * time.Second, kind: soapbridge.KindServerFault, status: 500, retryable: true},
		{name: "malformed", faults: soapsim.FaultSet{Malformed: 1}, deadline: 5 * time.Second, kind: soapbridge.KindMalformed, status: 200},
		{name: "oversized", faults: soapsim.FaultSet{Oversized: 1}, deadline: 5 * time.Second, kind: soapbridge.KindTooLarge, status: 200},
	}
	const margin = 2 * time.Second
	s := newSim(t, soapsim.Options{}, soapbridge.Options{})
	ops := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetStock", func(ctx context.Context) error { _, err := s.client.GetStock(ctx, "SKU-00001"); return err }},
		{"SearchProducts", func(ctx context.Context) error { _, err := s.client.SearchProducts(ctx, "", 1); return err }},
		{"ReserveItem", func(ctx context.Context) error {
			_, err := s.client.ReserveItem(ctx, "SKU-00002", 1, fmt.Sprintf("r-%d", time.Now().UnixNano()))
			return err
		}},
	}
	for _, tc := range cases {
		for _, op := range ops {
			t.Run(tc.name+"/"+op.name, func(t *testing.T) {
				if err := s.srv.SetFaults(soapsim.Faults{FaultSet: tc.faults}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
				defer cancel()
				start := time.Now()
				err := op.call(ctx)
				elapsed := time.Since(start)
				if elapsed > tc.deadline+margin {
					t.Errorf("took %v, deadline %v", elapsed, tc.deadline)
				}
				if elapsed < tc.minTime {
					t.Errorf("took %v, the latency fault asks for at least %v", elapsed, tc.minTime)
				}
				if tc.kind == 0 {
					if err != nil {
						t.Fatalf("err = %v", err)
					}
					return
				}
				var e *soapbridge.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v (%T), want *soapbridge.Error", err, err)
				}
				if e.Kind != tc.kind || e.Timeout != tc.timeout || soapbridge.Retryable(err) != tc.retryable || e.StatusCode != tc.status || e.Op != op.name {
					t.Errorf("err = %v: kind %v timeout %v retryable %v status %d op %s; want %v %v %v %d %s",
						err, e.Kind, e.Timeout, soapbridge.Retryable(err), e.StatusCode, e.Op, tc.kind, tc.timeout, tc.retryable, tc.status, op.name)
				}
				if tc.name == "reset" && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("reset: err = %v, want a connection reset", err)
				}
				if tc.kind == soapbridge.KindTooLarge && !strings.Contains(err.Error(), "MaxResponseBytes") {
					t.Errorf("too large: %q should name the option", err)
				}
			})
		}
	}
	st := s.srv.Stats()
	for _, m := range []string{soapsim.ModeHang, soapsim.ModeReset, soapsim.ModeHTTP500, soapsim.ModeSOAPFault, soapsim.ModeMalformed, soapsim.ModeOversized} {
		if st.Faults[m] != 3 {
			t.Errorf("faults[%s] = %d, want 3", m, st.Faults[m])
		}
	}
}

// TestOversizedWithinLimit checks the other side of the limit: the
// simulator's padded answer is valid, and a client allowing it parses it.
func TestOversizedWithinLimit(t *testing.T) {
	s := newSim(t, soapsim.Options{OversizeBytes: 200 << 10, Faults: soapsim.Faults{FaultSet: soapsim.FaultSet{Oversized: 1}}},
		soapbridge.Options{MaxResponseBytes: 300 << 10})
	if _, err := s.client.GetStock(ctxTimeout(t, 5*time.Second), "SKU-00001"); err != nil {
		t.Errorf("GetStock under a raised limit: %v", err)
	}
	small, err := soapbridge.New(s.ts.URL, soapbridge.Options{MaxResponseBytes: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer small.CloseIdleConnections()
	if _, err := small.GetStock(ctxTimeout(t, 5*time.Second), "SKU-00001"); !errors.Is(err, soapbridge.ErrTooLarge) {
		t.Errorf("GetStock over a lowered limit: %v", err)
	}
}

func TestPerOperationFaults(t *testing.T) {
	s := newSim(t, soapsim.Options{Faults: soapsim.Faults{
		FaultSet:   soapsim.FaultSet{HTTP500: 1},
		Operations: map[string]soapsim.FaultSet{"GetStock": {}},
	}}, soapbridge.Options{})
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := s.client.GetStock(ctx, "SKU-00001"); err != nil {
		t.Errorf("GetStock has no faults: %v", err)
	}
	if _, err := s.client.SearchProducts(ctx, "", 1); !errors.Is(err, soapbridge.ErrTransport) {
		t.Errorf("SearchProducts inherits http_500: %v", err)
	}
}

func TestCanceledWhileHanging(t *testing.T) {
	s := newSim(t, soapsim.Options{Faults: soapsim.Faults{FaultSet: soapsim.FaultSet{Hang: 1}}}, soapbridge.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := s.client.GetStock(ctx, "SKU-00001")
	if soapbridge.KindOf(err) != soapbridge.KindCanceled || soapbridge.Retryable(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := soapbridge.New("http://"+addr+"/", soapbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetStock(ctxTimeout(t, 5*time.Second), "SKU-00001")
	if !errors.Is(err, soapbridge.ErrTransport) || !soapbridge.Retryable(err) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want a retryable transport error", err)
	}
}

func TestNewValidation(t *testing.T) {
	cases := []struct {
		endpoint string
		o        soapbridge.Options
		problems []string
	}{
		{"http://127.0.0.1:1/", soapbridge.Options{}, nil},
		{"https://inventory.example/soap", soapbridge.Options{PageSize: 100, MaxResponseBytes: 1}, nil},
		{"ftp://x/", soapbridge.Options{}, []string{"scheme"}},
		{"http:///path", soapbridge.Options{}, []string{"host"}},
		{"::", soapbridge.Options{PageSize: 101, MaxResponseBytes: -1}, []string{"endpoint", "PageSize", "MaxResponseBytes"}},
	}
	for _, tc := range cases {
		c, err := soapbridge.New(tc.endpoint, tc.o)
		if (err == nil) != (tc.problems == nil) {
			t.Errorf("New(%q, %+v) = %v", tc.endpoint, tc.o, err)
			continue
		}
		if err == nil {
			c.CloseIdleConnections()
		}
		for _, p := range tc.problems {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("New(%q): %q does not mention %q", tc.endpoint, err, p)
			}
		}
	}
}

// TestRequestFaultsFromSimulator checks the simulator's answers to requests
// the client would never send, through the client's parser.
func TestRequestFaultsFromSimulator(t *testing.T) {
	s := newSim(t, soapsim.Options{}, soapbridge.Options{})
	cases := []struct {
		name, action, body string
	}{
		{"not xml", "", "hello"},
		{"not soap", "", "<a/>"},
		{"unknown operation", "", `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><Foo xmlns="urn:charla:inventory:v1"/></soap:Body></soap:Envelope>`},
		{"action mismatch", `"urn:charla:inventory:v1/ReserveItem"`, `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetStock xmlns="urn:charla:inventory:v1"><sku>SKU-00001</sku></GetStock></soap:Body></soap:Envelope>`},
		{"bad int", "", `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><SearchProducts xmlns="urn:charla:inventory:v1"><query/><page>one</page><pageSize>2</pageSize></SearchProducts></soap:Body></soap:Envelope>`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.ts.URL+"/", strings.NewReader(tc.body))
			if tc.action != "" {
				req.Header.Set("SOAPAction", tc.action)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 500 || !bytes.Contains(body, []byte("<faultcode>soap:Client</faultcode>")) ||
				!bytes.Contains(body, []byte("<code>invalid_request</code>")) {
				t.Errorf("HTTP %d %s", resp.StatusCode, body)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestWSDLOverHTTP checks the bytes that cross the wire against the WSDL's
// schema: every request the client sends, and the simulator's answers to
// them (results and faults).
func TestWSDLOverHTTP(t *testing.T) {
	s := newSim(t, soapsim.Options{}, soapbridge.Options{})
	ctx := ctxTimeout(t, 10*time.Second)
	calls := []struct {
		op   string
		call func() error
		dir  string
	}{
		{"GetStock", func() error { _, err := s.client.GetStock(ctx, "SKU-00007"); return err }, "out"},
		{"GetStock", func() error { _, err := s.client.GetStock(ctx, "nope"); return err }, "fault"},
		{"SearchProducts", func() error { _, err := s.client.SearchProducts(ctx, "mug", 1); return err }, "out"},
		{"SearchProducts", func() error { _, err := s.client.SearchProducts(ctx, "", 1); return err }, "out"},
		{"ReserveItem", func() error { _, err := s.client.ReserveItem(ctx, "SKU-00003", 1, "wsdl-1"); return err }, "out"},
		{"ReserveItem", func() error { _, err := s.client.ReserveItem(ctx, "SKU-00003", 100000, "wsdl-2"); return err }, "fault"},
	}
	for _, c := range calls {
		err := c.call()
		if (err != nil) != (c.dir == "fault") {
			t.Fatalf("%s: %v", c.op, err)
		}
		req, _ := s.lastRequest()
		if err := soapbridge.CheckEnvelopeForTest(t, req, c.op, "in"); err != nil {
			t.Errorf("%s request breaks the WSDL: %v\n%s", c.op, err, req)
		}
		// Replay the request (the reservation answers the same, being
		// idempotent) to see the answer's bytes.
		resp, err := http.Post(s.ts.URL+"/", "text/xml; charset=utf-8", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := soapbridge.CheckEnvelopeForTest(t, body, c.op, c.dir); err != nil {
			t.Errorf("%s answer breaks the WSDL: %v\n%s", c.op, err, body)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}
