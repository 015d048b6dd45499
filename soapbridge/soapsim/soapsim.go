// Package soapsim simulates the inventory service for development, tests and
// benchmarks: it serves soapbridge.WSDL at /?wsdl and its three operations at
// / (POST), from a deterministic catalogue of 10,000 items (or a CSV), with
// faults switchable at run time: latency, hangs, plain HTTP 500s, SOAP server
// faults, malformed XML, connection resets and oversized answers, each with a
// probability, optionally per operation.
//
// Admin endpoints, JSON:
//
//	GET  /admin/faults         the current Faults
//	PUT  /admin/faults         replace them (POST too); 400 lists every problem
//	DELETE /admin/faults       inject nothing
//	GET  /admin/stats          calls per operation, total, faults injected
//	POST /admin/reset          zero the counters (faults and stock stay)
//
// For example, 200 ms ± 50 ms on every call, one call in ten hanging, and
// every ReserveItem failing with a plain 500:
//
//	curl -X PUT localhost:8089/admin/faults -d '{"latency_ms":200,"jitter_ms":50,
//	  "hang":0.1,"operations":{"ReserveItem":{"http_500":1}}}'
//
// The counters let a test prove that the engine sent nothing while its
// breaker was open.
package soapsim

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"charla/internal/httpserve"
	"charla/soapbridge"
	"charla/soapbridge/internal/soapwire"
)

// Defaults of Options.
const (
	// DefaultOversizeBytes is the size of an oversized answer: twice the
	// client's default limit.
	DefaultOversizeBytes = 2 * soapbridge.DefaultMaxResponseBytes
	// maxRequestBytes bounds a request body; the largest valid request is a
	// few hundred bytes.
	maxRequestBytes = 64 << 10
)

// Options configures a Server. The zero value of each field means its
// default.
type Options struct {
	// Items is the catalogue (see LoadCSV). Default: Generate(Seed,
	// CatalogueSize).
	Items []soapbridge.Item
	// Seed seeds the generated catalogue and the fault draws, so that a run
	// with the same seed and the same calls behaves the same. Default 1.
	Seed uint64
	// CatalogueSize is how many items to generate when Items is nil.
	// Default DefaultCatalogueSize.
	CatalogueSize int
	// Faults is the initial fault configuration. Default: none.
	Faults Faults
	// OversizeBytes is the size of an oversized answer. Default
	// DefaultOversizeBytes.
	OversizeBytes int
	// Log receives a line per admin change and per injected fault (debug).
	// Default: the zero Logger, which writes nothing.
	Log zerolog.Logger
}

// Server is the simulated inventory service. It is safe for concurrent use.
type Server struct {
	log      zerolog.Logger
	oversize int

	mu           sync.Mutex // guards items, reservations
	items        map[string]*entry
	order        []*entry // by SKU, for search
	reservations map[string]soapwire.ReserveItemResponse

	faultsMu sync.Mutex // guards faults, rng
	faults   Faults
	rng      *rand.Rand

	calls       [3]atomic.Uint64 // by index in soapwire.Ops
	total       atomic.Uint64
	invalid     atomic.Uint64
	wsdl        atomic.Uint64
	injected    [7]atomic.Uint64 // by index in allModes
	closing     chan struct{}
	closingOnce sync.Once
}

// allModes indexes Server.injected.
var allModes = append([]string{ModeLatency}, exclusiveModes...)

// entry is one catalogue item and its name in lower case, for search.
type entry struct {
	item  soapbridge.Item
	lower string
}

// New builds a Server from o, reporting every problem of o at once.
func New(o Options) (*Server, error) {
	var errs []error
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.CatalogueSize < 0 || o.CatalogueSize > 99_999 {
		errs = append(errs, fmt.Errorf("CatalogueSize: must be 1 to 99999 (0 for the default), got %d", o.CatalogueSize))
	}
	if o.OversizeBytes < 0 {
		errs = append(errs, fmt.Errorf("OversizeBytes: must not be negative, got %d", o.OversizeBytes))
	}
	if err := o.Faults.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Faults: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("soapsim: %w", err)
	}
	if o.CatalogueSize == 0 {
		o.CatalogueSize = DefaultCatalogueSize
	}
	if o.OversizeBytes == 0 {
		o.OversizeBytes = DefaultOversizeBytes
	}
	items := o.Items
	if items == nil {
		items = Generate(o.Seed, o.CatalogueSize)
	}
	s := &Server{
		log:          o.Log,
		oversize:     o.OversizeBytes,
		items:        make(map[string]*entry, len(items)),
		reservations: make(map[string]soapwire.ReserveItemResponse),
		faults:       Faults{FaultSet: o.Faults.FaultSet, Operations: maps.Clone(o.Faults.Operations)},
		rng:          rand.New(rand.NewPCG(o.Seed, o.Seed+1)),
		closing:      make(chan struct{}),
	}
	for _, it := range items {
		if it.SKU == "" {
			return nil, errors.New("soapsim: Items: an item has an empty SKU")
		}
		if _, dup := s.items[it.SKU]; dup {
			return nil, fmt.Errorf("soapsim: Items: SKU %q appears twice", it.SKU)
		}
		e := &entry{item: it, lower: strings.ToLower(it.SKU + " " + it.Name)}
		s.items[it.SKU] = e
		s.order = append(s.order, e)
	}
	sort.Slice(s.order, func(i, j int) bool { return s.order[i].item.SKU < s.order[j].item.SKU })
	return s, nil
}

// Len returns the number of items in the catalogue.
func (s *Server) Len() int { return len(s.order) }

// Close releases every hanging or delayed call (their connections are
// dropped) and makes later hang faults drop the connection at once. Serve
// calls it on shutdown; a test serving Handler with httptest calls it before
// closing the httptest.Server, whose Close waits for handlers to return.
func (s *Server) Close() { s.closingOnce.Do(func() { close(s.closing) }) }

// Faults returns the current fault configuration.
func (s *Server) Faults() Faults {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	f := s.faults
	f.Operations = maps.Clone(f.Operations)
	return f
}

// SetFaults replaces the fault configuration, unless it is invalid.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	f.Operations = maps.Clone(f.Operations)
	s.faultsMu.Lock()
	s.faults = f
	s.faultsMu.Unlock()
	return nil
}

// Stats are the simulator's counters since it started or was last reset.
type Stats struct {
	// Calls counts the SOAP calls received per operation, before any fault
	// is injected: a call that hangs or is reset still counts.
	Calls map[string]uint64 `json:"calls"`
	// Total counts every POST to the SOAP endpoint, valid or not.
	Total uint64 `json:"total"`
	// Invalid counts the POSTs that named no known operation.
	Invalid uint64 `json:"invalid"`
	// Faults counts injected faults by mode (latency included).
	Faults map[string]uint64 `json:"faults"`
	// FaultsTotal is the sum of Faults.
	FaultsTotal uint64 `json:"faults_total"`
	// WSDL counts the WSDL downloads.
	WSDL uint64 `json:"wsdl"`
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	st := Stats{Calls: map[string]uint64{}, Faults: map[string]uint64{},
		Total: s.total.Load(), Invalid: s.invalid.Load(), WSDL: s.wsdl.Load()}
	for i, op := range soapwire.Ops {
		st.Calls[op] = s.calls[i].Load()
	}
	for i, m := range allModes {
		n := s.injected[i].Load()
		st.Faults[m] = n
		st.FaultsTotal += n
	}
	return st
}

// ResetStats zeroes the counters.
func (s *Server) ResetStats() {
	for i := range s.calls {
		s.calls[i].Store(0)
	}
	for i := range s.injected {
		s.injected[i].Store(0)
	}
	s.total.Store(0)
	s.invalid.Store(0)
	s.wsdl.Store(0)
}

// Handler returns the simulator's HTTP handler: the WSDL, the SOAP endpoint
// and the admin endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", s.serveRoot)
	mux.HandleFunc("/admin/faults", s.serveFaults)
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) })
	mux.HandleFunc("POST /admin/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.ResetStats()
		s.log.Info().Msg("soapsim: counters reset")
		writeJSON(w, http.StatusOK, s.Stats())
	})
	return mux
}

// Serve answers on ln until ctx ends, then releases hanging calls (Close)
// and shuts down gracefully, waiting up to 5 s for answers in flight. It
// returns nil after a shutdown caused by ctx, or the error that stopped
// serving.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return httpserve.Until(ctx, "soapsim", ln, s.Handler(), s.Close)
}

// Run listens on addr (host:port; port 0 picks one), logs the address, and
// serves a Server built from opts until ctx ends. It is the whole of a
// `charla soapsim` command.
func Run(ctx context.Context, addr string, opts Options, log zerolog.Logger) error {
	opts.Log = log
	s, err := New(opts)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("soapsim: %w", err)
	}
	log.Info().Str("addr", ln.Addr().String()).Int("items", s.Len()).
		Str("wsdl", "http://"+ln.Addr().String()+"/?wsdl").Msg("soap simulator listening")
	err = s.Serve(ctx, ln)
	log.Info().Err(err).Msg("soap simulator stopped")
	return err
}

func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if !r.URL.Query().Has("wsdl") && !r.URL.Query().Has("WSDL") {
			http.Error(w, "the SOAP endpoint takes POST; the WSDL is at /?wsdl", http.StatusMethodNotAllowed)
			return
		}
		s.wsdl.Add(1)
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(soapbridge.WSDL)
	case http.MethodPost:
		s.serveSOAP(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// clientFault is a request the simulator refuses, as a soap:Client fault.
type clientFault struct{ reason, msg string }

func (s *Server) serveSOAP(w http.ResponseWriter, r *http.Request) {
	s.total.Add(1)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		s.invalid.Add(1)
		writeFault(w, "soap:Client", soapwire.ReasonInvalidRequest, fmt.Sprintf("reading the request: %v", err))
		return
	}
	d, start, err := soapwire.Open(bytes.NewReader(body))
	if err != nil {
		s.invalid.Add(1)
		writeFault(w, "soap:Client", soapwire.ReasonInvalidRequest, fmt.Sprintf("not a SOAP 1.1 request: %v", err))
		return
	}
	opIndex := slices.Index(soapwire.Ops, start.Name.Local)
	if start.Name.Space != soapwire.NS || opIndex < 0 {
		s.invalid.Add(1)
		writeFault(w, "soap:Client", soapwire.ReasonInvalidRequest,
			fmt.Sprintf("unknown operation {%s}%s", start.Name.Space, start.Name.Local))
		return
	}
	op := soapwire.Ops[opIndex]
	s.calls[opIndex].Add(1)
	if a := strings.Trim(r.Header.Get("SOAPAction"), `"`); a != "" && a != soapwire.Action(op) {
		writeFault(w, "soap:Client", soapwire.ReasonInvalidRequest,
			fmt.Sprintf("SOAPAction %q does not match the body's operation %s", a, op))
		return
	}
	mode := s.draw(op)
	if !s.delay(r.Context(), op) {
		panic(http.ErrAbortHandler) // the client left or the server is closing
	}
	switch mode {
	case ModeHang:
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		panic(http.ErrAbortHandler)
	case ModeReset:
		reset(w)
		return
	case ModeHTTP500:
		http.Error(w, "simulated internal server error", http.StatusInternalServerError)
		return
	case ModeSOAPFault:
		writeFault(w, "soap:Server", soapwire.ReasonInternal, "simulated server fault")
		return
	}
	resp, cf := s.dispatch(d, start, op)
	if cf != nil {
		writeFault(w, "soap:Client", cf.reason, cf.msg)
		return
	}
	out, err := soapwire.Marshal(resp)
	if err != nil {
		writeFault(w, "soap:Server", soapwire.ReasonInternal, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	switch mode {
	case ModeMalformed:
		// Cut inside the response element: the XML is unfinished, as when a
		// proxy truncates an answer.
		_, _ = w.Write(out[:len(out)*2/3])
	case ModeOversized:
		s.writeOversized(w, out)
	default:
		_, _ = w.Write(out)
	}
}

// draw picks at most one exclusive fault mode for a call to op.
func (s *Server) draw(op string) string {
	s.faultsMu.Lock()
	fs := s.faults.For(op)
	x := s.rng.Float64()
	s.faultsMu.Unlock()
	acc := 0.0
	for i, p := range fs.probabilities() {
		acc += p
		if p > 0 && x < acc {
			m := exclusiveModes[i]
			s.injected[slices.Index(allModes, m)].Add(1)
			s.log.Debug().Str("op", op).Str("fault", m).Msg("soapsim: injecting fault")
			return m
		}
	}
	return ""
}

// delay applies the latency fault for op; it reports false when the wait was
// cut short by the client leaving or the server closing.
func (s *Server) delay(ctx context.Context, op string) bool {
	s.faultsMu.Lock()
	fs := s.faults.For(op)
	apply := fs.LatencyMS > 0 && (fs.LatencyProbability == 0 || s.rng.Float64() < fs.LatencyProbability)
	ms := fs.LatencyMS
	if apply && fs.JitterMS > 0 {
		ms += s.rng.IntN(2*fs.JitterMS+1) - fs.JitterMS
	}
	s.faultsMu.Unlock()
	if !apply || ms <= 0 {
		return true
	}
	s.injected[0].Add(1)
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// reset closes the connection with SO_LINGER 0, so that the kernel sends a
// RST instead of a FIN: the client reads "connection reset by peer".
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// writeOversized pads a valid answer with an XML comment up to s.oversize
// bytes, streamed in chunks so that the client meets its limit while
// reading, not from a Content-Length.
func (s *Server) writeOversized(w http.ResponseWriter, out []byte) {
	i := bytes.Index(out, []byte("<soap:Body>")) + len("<soap:Body>")
	if _, err := w.Write(out[:i]); err != nil {
		return
	}
	_, _ = w.Write([]byte("<!--"))
	chunk := bytes.Repeat([]byte("padding "), 4096)
	for n := len(out) + len("<!---->"); n < s.oversize; n += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return // the client gave up, as it should
		}
	}
	_, _ = w.Write([]byte("-->"))
	_, _ = w.Write(out[i:])
}

// dispatch runs op on the request element start.
func (s *Server) dispatch(d *xml.Decoder, start xml.StartElement, op string) (any, *clientFault) {
	decode := func(v any) *clientFault {
		if err := d.DecodeElement(v, &start); err != nil {
			return &clientFault{soapwire.ReasonInvalidRequest, fmt.Sprintf("decoding %s: %v", op, err)}
		}
		if err := soapwire.Finish(d); err != nil {
			return &clientFault{soapwire.ReasonInvalidRequest, err.Error()}
		}
		return nil
	}
	switch op {
	case soapwire.OpGetStock:
		var req soapwire.GetStock
		if cf := decode(&req); cf != nil {
			return nil, cf
		}
		return s.getStock(req)
	case soapwire.OpSearchProducts:
		var req soapwire.SearchProducts
		if cf := decode(&req); cf != nil {
			return nil, cf
		}
		return s.search(req)
	default:
		var req soapwire.ReserveItem
		if cf := decode(&req); cf != nil {
			return nil, cf
		}
		return s.reserve(req)
	}
}

func (s *Server) getStock(req soapwire.GetStock) (any, *clientFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.items[req.SKU]
	if !ok {
		return nil, &clientFault{soapwire.ReasonUnknownSKU, fmt.Sprintf("unknown SKU %q", req.SKU)}
	}
	it := e.item
	return soapwire.GetStockResponse{SKU: it.SKU, Name: it.Name, Quantity: it.Quantity, Warehouse: it.Warehouse, UpdatedAt: it.UpdatedAt}, nil
}

func (s *Server) search(req soapwire.SearchProducts) (any, *clientFault) {
	if req.Page < 1 || req.PageSize < 1 || req.PageSize > soapbridge.MaxPageSize {
		return nil, &clientFault{soapwire.ReasonInvalidRequest,
			fmt.Sprintf("page must be at least 1 and pageSize 1 to %d, got %d and %d", soapbridge.MaxPageSize, req.Page, req.PageSize)}
	}
	q := strings.ToLower(strings.TrimSpace(req.Query))
	resp := soapwire.SearchProductsResponse{Page: req.Page, PageSize: req.PageSize}
	from := (req.Page - 1) * req.PageSize
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.order {
		if q != "" && !strings.Contains(e.lower, q) {
			continue
		}
		if resp.Total >= from && len(resp.Products) < req.PageSize {
			resp.Products = append(resp.Products, soapwire.Product{SKU: e.item.SKU, Name: e.item.Name, Quantity: e.item.Quantity})
		}
		resp.Total++
	}
	return resp, nil
}

func (s *Server) reserve(req soapwire.ReserveItem) (any, *clientFault) {
	if req.ReservationID == "" || req.Quantity < 1 {
		return nil, &clientFault{soapwire.ReasonInvalidRequest, "reservationId is required and quantity must be at least 1"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.reservations[req.ReservationID]; ok {
		if prev.SKU != req.SKU || prev.Quantity != req.Quantity {
			return nil, &clientFault{soapwire.ReasonReservationConflict,
				fmt.Sprintf("reservation %q was made for %d of %s", req.ReservationID, prev.Quantity, prev.SKU)}
		}
		return prev, nil
	}
	e, ok := s.items[req.SKU]
	if !ok {
		return nil, &clientFault{soapwire.ReasonUnknownSKU, fmt.Sprintf("unknown SKU %q", req.SKU)}
	}
	if e.item.Quantity < req.Quantity {
		return nil, &clientFault{soapwire.ReasonInsufficientStock,
			fmt.Sprintf("%s has %d in stock, %d requested", req.SKU, e.item.Quantity, req.Quantity)}
	}
	now := time.Now().UTC()
	e.item.Quantity -= req.Quantity
	e.item.UpdatedAt = now
	resp := soapwire.ReserveItemResponse{ReservationID: req.ReservationID, SKU: req.SKU, Quantity: req.Quantity,
		Remaining: e.item.Quantity, ReservedAt: now}
	// Only successes are remembered: a refused reservation may succeed
	// later under the same ID, and retrying a refusal changes nothing.
	s.reservations[req.ReservationID] = resp
	return resp, nil
}

// writeFault answers with a SOAP 1.1 fault, HTTP 500 as SOAP 1.1 says.
func writeFault(w http.ResponseWriter, code, reason, msg string) {
	out, err := soapwire.Marshal(soapwire.Fault{Code: code, String: msg,
		Detail: &soapwire.Detail{InventoryFault: &soapwire.InventoryFault{Code: reason, Message: msg}}})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(out)
}

func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case http.MethodPut, http.MethodPost:
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, problems(err))
			return
		}
		f, err := ParseFaults(data)
		if err == nil {
			err = s.SetFaults(f)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, problems(err))
			return
		}
		s.log.Info().RawJSON("faults", data).Msg("soapsim: faults set")
		writeJSON(w, http.StatusOK, s.Faults())
	case http.MethodDelete:
		_ = s.SetFaults(Faults{})
		s.log.Info().Msg("soapsim: faults cleared")
		writeJSON(w, http.StatusOK, s.Faults())
	default:
		w.Header().Set("Allow", "GET, PUT, POST, DELETE")
		writeJSON(w, http.StatusMethodNotAllowed, problems(errors.New("method not allowed")))
	}
}

// problems lists every problem of a joined error, one per entry.
func problems(err error) map[string][]string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, e.Error())
	}
	walk(err)
	return map[string][]string{"errors": out}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
