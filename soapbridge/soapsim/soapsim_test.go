package soapsim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"charla/soapbridge"
	"charla/soapbridge/internal/soapwire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestGenerate pins the generated catalogue: every run, on every machine,
// must serve the same items (math/rand/v2's PCG is a specified algorithm).
func TestGenerate(t *testing.T) {
	items := Generate(1, DefaultCatalogueSize)
	if len(items) != 10_000 || items[0].SKU != "SKU-00001" || items[9999].SKU != "SKU-10000" {
		t.Fatalf("catalogue: %d items, %s ... %s", len(items), items[0].SKU, items[len(items)-1].SKU)
	}
	h := sha256.New()
	zero, names := 0, map[string]bool{}
	for _, it := range items {
		fmt.Fprintf(h, "%s|%s|%d|%s|%s\n", it.SKU, it.Name, it.Quantity, it.Warehouse, it.UpdatedAt.Format(time.RFC3339))
		if it.Quantity == 0 {
			zero++
		}
		names[it.Name] = true
	}
	const golden = "4131f69c4b5d3ded2e341535869a4b84a30a4d4f6c0f68ef6b14b2ae226f2e64"
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != golden {
		t.Errorf("catalogue fingerprint %s, want %s: the generator changed", got, golden)
	}
	if zero < 300 || zero > 700 {
		t.Errorf("%d items out of stock, want about 5 %%", zero)
	}
	if len(names) < 9000 {
		t.Errorf("only %d distinct names", len(names))
	}
	if other := Generate(2, 10); other[0] == items[0] && other[1] == items[1] {
		t.Error("seed 2 gives seed 1's catalogue")
	}
}

func TestLoadCSV(t *testing.T) {
	cases := []struct {
		name     string
		csv      string
		items    int
		problems []string // substrings, one per expected problem
	}{
		{"with header", "sku,name,quantity,warehouse\nA,Mug,3,W1\nB,\"Lamp, big\",0,W2\n", 2, nil},
		{"without header", "A,Mug,3,W1\n", 1, nil},
		{"spaces", " A , Mug , 3 , W1 \n", 1, nil},
		{"empty", "", 0, []string{"no items"}},
		{"header only", "SKU,Name,Quantity,Warehouse\n", 0, []string{"no items"}},
		{"every problem", "A,Mug,3,W1\nB,Lamp\nA,Again,1,W\nC,,x,\nD,Chair,-1,W\n", 0,
			[]string{"line 2: has 2 fields", `line 3: sku "A" already on line 1`, "line 4: name is empty",
				`line 4: quantity "x"`, "line 4: warehouse is empty", `line 5: quantity "-1"`}},
		{"bad quote", "A,Mug,3,W1\nB,\"Lamp,3,W\n", 0, []string{"line 2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			items, err := LoadCSV(strings.NewReader(tc.csv))
			if len(items) != tc.items {
				t.Errorf("%d items, want %d", len(items), tc.items)
			}
			if (err != nil) != (tc.problems != nil) {
				t.Fatalf("err = %v", err)
			}
			for _, p := range tc.problems {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("%q lacks %q", err, p)
				}
			}
			var ce *CSVError
			if len(tc.problems) > 1 && !errors.As(err, &ce) {
				t.Errorf("no *CSVError in %v", err)
			}
		})
	}
	var many strings.Builder
	for i := range 50 {
		fmt.Fprintf(&many, "S%d,Mug,lots,W\n", i)
	}
	if _, err := LoadCSV(strings.NewReader(many.String())); err == nil || !strings.Contains(err.Error(), "and 30 more bad lines") {
		t.Errorf("50 bad lines: %v", err)
	}

	path := filepath.Join(t.TempDir(), "items.csv")
	if err := os.WriteFile(path, []byte("A,Mug,3,W1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	items, err := LoadCSVFile(path)
	if err != nil || len(items) != 1 || items[0] != (soapbridge.Item{SKU: "A", Name: "Mug", Quantity: 3, Warehouse: "W1", UpdatedAt: catalogueEpoch}) {
		t.Errorf("LoadCSVFile = %+v, %v", items, err)
	}
	if _, err := LoadCSVFile(path + ".missing"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestNew(t *testing.T) {
	s, err := New(Options{})
	if err != nil || s.Len() != DefaultCatalogueSize {
		t.Fatalf("New(default) = %v items, %v", s, err)
	}
	_, err = New(Options{CatalogueSize: -1, OversizeBytes: -1, Faults: Faults{FaultSet: FaultSet{Hang: 2}}})
	for _, p := range []string{"CatalogueSize", "OversizeBytes", "hang"} {
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("New(bad options): %v lacks %q", err, p)
		}
	}
	if _, err := New(Options{Items: []soapbridge.Item{{SKU: "A"}, {SKU: "A"}}}); err == nil {
		t.Error("duplicate SKUs accepted")
	}
}

// do sends one admin or SOAP request straight to the handler.
func do(h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, strings.NewReader(body)))
	return w
}

func TestAdminFaults(t *testing.T) {
	s, err := New(Options{CatalogueSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	cases := []struct {
		name     string
		method   string
		body     string
		status   int
		problems []string
	}{
		{"valid", "PUT", `{"latency_ms":200,"jitter_ms":50,"hang":0.1,"operations":{"ReserveItem":{"http_500":1}}}`, 200, nil},
		{"post works too", "POST", `{"soap_fault":0.5}`, 200, nil},
		{"not json", "PUT", `{"hang":`, 400, []string{"JSON object"}},
		{"not an object", "PUT", `[1]`, 400, []string{"JSON object"}},
		{"every problem", "PUT", `{"hang":1.5,"reset":-1,"latency_ms":"slow","jitter_ms":10,"bogus":1,` +
			`"operations":{"Nope":{},"GetStock":{"malformed":0.6,"oversized":0.6,"extra":true}}}`, 400,
			[]string{"hang: must be a probability", "reset: must be a probability", `latency_ms: "slow" is not a whole number`,
				"jitter_ms: must not exceed latency_ms", "bogus: unknown field", "operations.Nope: unknown operation",
				"operations.GetStock.extra: unknown field", "operations.GetStock.hang+reset+http_500+soap_fault+malformed+oversized: probabilities add up to 1.2"}},
		{"latency too long", "PUT", `{"latency_ms":600001}`, 400, []string{"latency_ms: must be 0 to 600000"}},
		{"method", "PATCH", `{}`, 405, []string{"method not allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Faults()
			w := do(h, tc.method, "/admin/faults", tc.body)
			if w.Code != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				var got struct{ Errors []string }
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
					t.Fatalf("error body %s: %v", w.Body, err)
				}
				if len(got.Errors) != len(tc.problems) {
					t.Errorf("%d problems, want %d: %q", len(got.Errors), len(tc.problems), got.Errors)
				}
				for _, p := range tc.problems {
					if !strings.Contains(strings.Join(got.Errors, "\n"), p) {
						t.Errorf("answer lacks %q: %s", p, w.Body)
					}
				}
				if after := s.Faults(); fmt.Sprint(after) != fmt.Sprint(before) {
					t.Errorf("a refused update changed the faults: %+v", after)
				}
				return
			}
			var got Faults
			if err := json.Unmarshal(do(h, "GET", "/admin/faults", "").Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want, _ := ParseFaults([]byte(tc.body))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("GET after %s: %+v, want %+v", tc.method, got, want)
			}
		})
	}
	if w := do(h, "DELETE", "/admin/faults", ""); w.Code != 200 || fmt.Sprint(s.Faults()) != fmt.Sprint(Faults{}) {
		t.Errorf("DELETE: %d %+v", w.Code, s.Faults())
	}
}

func soapRequest(payload any) string {
	b, err := soapwire.Marshal(payload)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestStatsAndProbabilities checks the counters, and that faults are drawn
// with about the configured probabilities.
func TestStatsAndProbabilities(t *testing.T) {
	s, err := New(Options{CatalogueSize: 10, Faults: Faults{FaultSet: FaultSet{HTTP500: 0.25, SOAPFault: 0.25}}})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	get := soapRequest(soapwire.GetStock{SKU: "SKU-00001"})
	statuses := map[string]int{}
	for range 400 {
		w := do(h, "POST", "/", get)
		kind := "ok"
		if w.Code == 500 {
			kind = "plain"
			if strings.Contains(w.Body.String(), "soap:Server") {
				kind = "fault"
			}
		}
		statuses[kind]++
	}
	for kind, n := range statuses {
		if want := map[string]int{"ok": 200, "plain": 100, "fault": 100}[kind]; n < want*6/10 || n > want*14/10 {
			t.Errorf("%s: %d of 400, want about %d", kind, n, want)
		}
	}
	if err := s.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	do(h, "POST", "/", soapRequest(soapwire.SearchProducts{Page: 1, PageSize: 5}))
	do(h, "POST", "/", "garbage")
	do(h, "GET", "/?wsdl", "")

	var st Stats
	if err := json.Unmarshal(do(h, "GET", "/admin/stats", "").Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Calls["GetStock"] != 400 || st.Calls["SearchProducts"] != 1 || st.Calls["ReserveItem"] != 0 ||
		st.Total != 402 || st.Invalid != 1 || st.WSDL != 1 ||
		st.Faults[ModeHTTP500] != uint64(statuses["plain"]) || st.Faults[ModeSOAPFault] != uint64(statuses["fault"]) ||
		st.FaultsTotal != st.Faults[ModeHTTP500]+st.Faults[ModeSOAPFault] {
		t.Errorf("stats %+v after %v", st, statuses)
	}
	if w := do(h, "POST", "/admin/reset", ""); w.Code != 200 {
		t.Fatalf("reset: %d", w.Code)
	}
	if st := s.Stats(); st.Total != 0 || st.FaultsTotal != 0 || st.Calls["GetStock"] != 0 || st.WSDL != 0 {
		t.Errorf("stats after reset %+v", st)
	}
	_ = s.SetFaults(Faults{FaultSet: FaultSet{Hang: 0.5}})
	do(h, "POST", "/admin/reset", "")
	if s.Faults().Hang != 0.5 {
		t.Error("reset changed the faults")
	}
}

func TestWSDLServed(t *testing.T) {
	s, err := New(Options{CatalogueSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	w := do(h, "GET", "/?wsdl", "")
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), soapbridge.WSDL) || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/xml") {
		t.Errorf("GET /?wsdl: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	if w := do(h, "GET", "/", ""); w.Code != 405 {
		t.Errorf("GET /: %d", w.Code)
	}
	if w := do(h, "GET", "/other", ""); w.Code != 404 {
		t.Errorf("GET /other: %d", w.Code)
	}
}

// TestServeShutdownReleasesHang serves on a real listener, leaves a call
// hanging, and checks that cancelling Serve's context ends both promptly
// (goleak then checks that no handler goroutine is left).
func TestServeShutdownReleasesHang(t *testing.T) {
	s, err := New(Options{CatalogueSize: 10, Faults: Faults{FaultSet: FaultSet{Hang: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	c, err := soapbridge.New("http://"+ln.Addr().String()+"/", soapbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	called := make(chan error, 1)
	callCtx, callCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer callCancel()
	go func() { _, err := c.GetStock(callCtx, "SKU-00001"); called <- err }()
	for s.Stats().Calls["GetStock"] == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return within 3 s of its context ending")
	}
	select {
	case err := <-called:
		if !errors.Is(err, soapbridge.ErrTransport) {
			t.Errorf("hanging call ended with %v, want a transport error", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the hanging call did not end")
	}
	t.Logf("shutdown with a hanging call took %v", time.Since(start))
}

// syncBuffer is a log sink read while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun(t *testing.T) {
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, "127.0.0.1:0", Options{CatalogueSize: 5}, zerolog.New(&logs)) }()
	var addr string
	for deadline := time.Now().Add(5 * time.Second); addr == "" && time.Now().Before(deadline); {
		var line struct{ Addr string }
		first, _, _ := strings.Cut(logs.String(), "\n")
		if json.Unmarshal([]byte(first), &line) == nil {
			addr = line.Addr
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		t.Fatalf("no address logged: %s", logs.String())
	}
	resp, err := http.Get("http://" + addr + "/?wsdl")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if !bytes.Equal(body, soapbridge.WSDL) {
		t.Error("Run does not serve the WSDL")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := Run(context.Background(), "127.0.0.1:-1", Options{}, zerolog.Nop()); err == nil {
		t.Error("Run on a bad address: no error")
	}
}
