package soapbridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"charla/soapbridge/internal/soapwire"
)

func TestRetryable(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	live := context.Background()
	urlErr := func(err error) error { return &url.Error{Op: "Post", URL: "http://x/", Err: err} }
	cases := []struct {
		name      string
		err       error
		kind      Kind
		retryable bool
		timeout   bool
	}{
		{"reset", transportError(live, "GetStock", 0, urlErr(syscall.ECONNRESET)), KindTransport, true, false},
		{"refused", transportError(live, "GetStock", 0, urlErr(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED})), KindTransport, true, false},
		{"eof", transportError(live, "GetStock", 0, urlErr(io.EOF)), KindTransport, true, false},
		{"ctx deadline", transportError(expired, "GetStock", 0, urlErr(context.DeadlineExceeded)), KindTransport, true, true},
		{"client timeout", transportError(live, "GetStock", 0, urlErr(timeoutErr{})), KindTransport, true, true},
		{"canceled", transportError(cancelled, "GetStock", 0, urlErr(context.Canceled)), KindCanceled, false, false},
		{"5xx without fault", parseResponse("GetStock", 503, []byte("busy"), nil), KindTransport, true, false},
		{"429", parseResponse("GetStock", 429, nil, nil), KindTransport, true, false},
		{"server fault", parseResponse("GetStock", 500, faultXML("soap:Server", ""), nil), KindServerFault, true, false},
		{"unknown fault code", parseResponse("GetStock", 500, faultXML("soap:Receiver", ""), nil), KindServerFault, true, false},
		{"client fault", parseResponse("GetStock", 500, faultXML("soap:Client", ReasonUnknownSKU), nil), KindClientFault, false, false},
		{"dotted client fault", parseResponse("GetStock", 500, faultXML("Client.Authentication", ""), nil), KindClientFault, false, false},
		{"version mismatch", parseResponse("GetStock", 500, faultXML("soap:VersionMismatch", ""), nil), KindClientFault, false, false},
		{"malformed", parseResponse("GetStock", 200, []byte("<soap:Envelope"), nil), KindMalformed, false, false},
		{"404 html", parseResponse("GetStock", 404, []byte("<html>not here</html>"), nil), KindMalformed, false, false},
		{"too large", &Error{Op: "GetStock", Kind: KindTooLarge}, KindTooLarge, false, false},
		{"refused locally", refused("GetStock", "sku is required"), KindClientFault, false, false},
		{"wrapped", fmt.Errorf("soap actor: %w", &Error{Op: "GetStock", Kind: KindServerFault}), KindServerFault, true, false},
		{"foreign", errors.New("something else"), 0, false, false},
		{"nil", nil, 0, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.kind {
				t.Errorf("KindOf(%v) = %v, want %v", tc.err, got, tc.kind)
			}
			if got := Retryable(tc.err); got != tc.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.retryable)
			}
			var e *Error
			if errors.As(tc.err, &e) && e.Timeout != tc.timeout {
				t.Errorf("Timeout = %v, want %v", e.Timeout, tc.timeout)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func faultXML(code, reason string) []byte {
	f := soapwire.Fault{Code: code, String: "it failed"}
	if reason != "" {
		f.Detail = &soapwire.Detail{InventoryFault: &soapwire.InventoryFault{Code: reason, Message: "details"}}
	}
	b, err := soapwire.Marshal(f)
	if err != nil {
		panic(err)
	}
	return b
}

func TestErrorText(t *testing.T) {
	err := parseResponse("ReserveItem", 500, faultXML("soap:Client", ReasonInsufficientStock), nil)
	want := "soapbridge: ReserveItem: client_fault (HTTP 500): soap fault soap:Client (insufficient_stock): it failed"
	if err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err, want)
	}
	if !errors.Is(err, ErrInsufficientStock) || errors.Is(err, ErrUnknownSKU) || !errors.Is(err, ErrClientFault) || errors.Is(err, ErrServerFault) {
		t.Errorf("matching of %v", err)
	}
	var f *Fault
	if !errors.As(err, &f) || f.Message != "details" || !strings.Contains(f.Detail, "InventoryFault") {
		t.Errorf("fault = %+v", f)
	}
}

// TestParseResponse covers what real services send besides the simulator's
// own answers: prefixes declared on the envelope, headers, faults with 200.
func TestParseResponse(t *testing.T) {
	const env = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="urn:charla:inventory:v1">`
	ok := env + `<s:Header><x:trace xmlns:x="urn:x">1</x:trace></s:Header><s:Body>` +
		`<i:GetStockResponse><i:sku>A</i:sku><i:name>Mug</i:name><i:quantity>3</i:quantity>` +
		`<i:warehouse>W</i:warehouse><i:updatedAt>2026-01-02T03:04:05Z</i:updatedAt></i:GetStockResponse></s:Body></s:Envelope>`
	cases := []struct {
		name   string
		status int
		body   string
		kind   Kind
	}{
		{"prefixed with header", 200, ok, 0},
		{"fault with 200", 200, string(faultXML("soap:Server", "")), KindServerFault},
		{"fault without code", 500, env + `<s:Body><s:Fault><faultstring>x</faultstring></s:Fault></s:Body></s:Envelope>`, KindMalformed},
		{"wrong response element", 200, env + `<s:Body><i:ReserveItemResponse/></s:Body></s:Envelope>`, KindMalformed},
		{"wrong namespace", 200, strings.ReplaceAll(ok, "urn:charla:inventory:v1", "urn:other"), KindMalformed},
		{"two body elements", 200, strings.Replace(ok, "</s:Body>", "<i:x/></s:Body>", 1), KindMalformed},
		{"truncated", 200, ok[:len(ok)-12], KindMalformed},
		{"not an int", 200, strings.Replace(ok, ">3<", ">three<", 1), KindMalformed},
		{"bad time", 200, strings.Replace(ok, "2026-01-02T03:04:05Z", "yesterday", 1), KindMalformed},
		{"empty body", 200, env + `<s:Body></s:Body></s:Envelope>`, KindMalformed},
		{"empty", 200, "", KindMalformed},
		{"latin1", 200, `<?xml version="1.0" encoding="iso-8859-1"?>` + ok, KindMalformed},
		{"text after", 200, ok + "junk", KindMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out soapwire.GetStockResponse
			err := parseResponse("GetStock", tc.status, []byte(tc.body), &out)
			if KindOf(err) != tc.kind || (tc.kind == 0) != (err == nil) {
				t.Fatalf("err = %v, want kind %v", err, tc.kind)
			}
			if tc.kind == 0 && (out.SKU != "A" || out.Quantity != 3 || out.UpdatedAt.Year() != 2026) {
				t.Errorf("decoded %+v", out)
			}
		})
	}
}

// FuzzParseResponse feeds the response parser arbitrary bytes: it must never
// panic, must answer an *Error of a known kind or nil, and nil only for a
// 2xx status.
func FuzzParseResponse(f *testing.F) {
	for i := range soapwire.Ops {
		f.Add(uint8(i), 500, faultXML("soap:Client", ReasonUnknownSKU))
	}
	seeds := []any{
		soapwire.GetStockResponse{SKU: "A", Name: "n", Quantity: 1, Warehouse: "w", UpdatedAt: time.Unix(0, 0).UTC()},
		soapwire.SearchProductsResponse{Page: 1, PageSize: 2, Total: 3, Products: []soapwire.Product{{SKU: "A", Name: "n", Quantity: 1}}},
		soapwire.ReserveItemResponse{ReservationID: "r", SKU: "A", Quantity: 1, Remaining: 2, ReservedAt: time.Unix(0, 0).UTC()},
	}
	for i, s := range seeds {
		b, err := soapwire.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), 200, b)
		f.Add(uint8(i), 200, b[:len(b)/2])
	}
	f.Add(uint8(0), 500, []byte("internal error"))
	f.Add(uint8(1), 200, []byte(`<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Header/><Body><Fault><faultcode>Server</faultcode><detail><x/></detail></Fault></Body></Envelope>`))
	f.Fuzz(func(t *testing.T, opIndex uint8, status int, data []byte) {
		op := soapwire.Ops[int(opIndex)%len(soapwire.Ops)]
		outs := []any{&soapwire.GetStockResponse{}, &soapwire.SearchProductsResponse{}, &soapwire.ReserveItemResponse{}}
		err := parseResponse(op, status, data, outs[int(opIndex)%len(outs)])
		if err == nil {
			if status < 200 || status > 299 {
				t.Fatalf("nil error for HTTP %d", status)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Kind < KindTransport || e.Kind > KindCanceled || e.Op != op {
			t.Fatalf("err = %#v", err)
		}
		_ = err.Error()
	})
}
