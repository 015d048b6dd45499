package soapbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"charla/soapbridge/internal/soapwire"
)

// Defaults of Options.
const (
	// DefaultMaxResponseBytes bounds a response body: the largest legitimate
	// answer (a search page of MaxPageSize products) is a few tens of KB, so
	// 1 MiB leaves room without letting a broken service fill the heap.
	DefaultMaxResponseBytes = 1 << 20
	// DefaultPageSize is how many products a SearchProducts page asks for.
	DefaultPageSize = 20
	// MaxPageSize is the largest page size the service accepts.
	MaxPageSize = 100
)

// Options configures a Client. The zero value of each field means its
// default.
type Options struct {
	// HTTPClient sends the requests. Default: a client of its own with a
	// clone of http.DefaultTransport keeping up to 64 idle connections to the
	// service (the soap actor's bulkhead bounds concurrency, not the pool),
	// and no Timeout: the per-call deadline is the context's.
	HTTPClient *http.Client
	// MaxResponseBytes bounds a response body; a larger one fails with
	// KindTooLarge. Default DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// PageSize is how many products a SearchProducts page asks for, 1 to
	// MaxPageSize. Default DefaultPageSize.
	PageSize int
}

// Client calls the inventory service. It is safe for concurrent use. Each
// call is one HTTP request; see the package comment for what it leaves to
// the caller.
type Client struct {
	endpoint string
	http     *http.Client
	maxBytes int64
	pageSize int
}

// New returns a Client for the service at endpoint (an absolute http or
// https URL, the WSDL's soap:address). It reports every problem of endpoint
// and o at once.
func New(endpoint string, o Options) (*Client, error) {
	var errs []error
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("endpoint: %w", err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("endpoint: scheme must be http or https, got %q", u.Scheme))
	case u.Host == "":
		errs = append(errs, errors.New("endpoint: host is missing"))
	}
	if o.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxResponseBytes: must not be negative, got %d", o.MaxResponseBytes))
	}
	if o.PageSize < 0 || o.PageSize > MaxPageSize {
		errs = append(errs, fmt.Errorf("PageSize: must be 1 to %d (0 for the default), got %d", MaxPageSize, o.PageSize))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("soapbridge: %w", err)
	}
	c := &Client{endpoint: endpoint, http: o.HTTPClient, maxBytes: o.MaxResponseBytes, pageSize: o.PageSize}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: t}
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultMaxResponseBytes
	}
	if c.pageSize == 0 {
		c.pageSize = DefaultPageSize
	}
	return c, nil
}

// Endpoint returns the service URL the client posts to.
func (c *Client) Endpoint() string { return c.endpoint }

// CloseIdleConnections closes the keep-alive connections the client holds
// to the service, for a clean shutdown (or to make the next call dial anew).
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// GetStock returns the item sku. An unknown SKU is a client fault matching
// ErrUnknownSKU.
func (c *Client) GetStock(ctx context.Context, sku string) (Item, error) {
	if sku == "" {
		return Item{}, refused(OpGetStock, "sku is required")
	}
	var r soapwire.GetStockResponse
	if err := c.call(ctx, OpGetStock, soapwire.GetStock{SKU: sku}, &r); err != nil {
		return Item{}, err
	}
	if err := checkResponse(r.SKU, r.Quantity, "quantity"); err != nil {
		return Item{}, &Error{Op: OpGetStock, Kind: KindMalformed, StatusCode: http.StatusOK, Err: err}
	}
	return Item{SKU: r.SKU, Name: r.Name, Quantity: r.Quantity, Warehouse: r.Warehouse, UpdatedAt: r.UpdatedAt}, nil
}

// SearchProducts returns page number page (1-based) of the products whose
// SKU or name contains query, Options.PageSize per page. A page past the last
// one is empty, not an error.
func (c *Client) SearchProducts(ctx context.Context, query string, page int) (Page, error) {
	if page < 1 {
		return Page{}, refused(OpSearchProducts, fmt.Sprintf("page must be at least 1, got %d", page))
	}
	var r soapwire.SearchProductsResponse
	req := soapwire.SearchProducts{Query: query, Page: page, PageSize: c.pageSize}
	if err := c.call(ctx, OpSearchProducts, req, &r); err != nil {
		return Page{}, err
	}
	malformed := func(format string, args ...any) (Page, error) {
		return Page{}, &Error{Op: OpSearchProducts, Kind: KindMalformed, StatusCode: http.StatusOK, Err: fmt.Errorf(format, args...)}
	}
	if r.Total < 0 || r.PageSize < 1 || r.Page < 1 || len(r.Products) > r.PageSize {
		return malformed("inconsistent page: page %d, pageSize %d, total %d, %d products", r.Page, r.PageSize, r.Total, len(r.Products))
	}
	p := Page{Page: r.Page, PageSize: r.PageSize, Total: r.Total, Products: make([]Product, len(r.Products))}
	for i, rp := range r.Products {
		if err := checkResponse(rp.SKU, rp.Quantity, "quantity"); err != nil {
			return malformed("product %d: %v", i+1, err)
		}
		p.Products[i] = Product(rp)
	}
	return p, nil
}

// ReserveItem reserves qty units of sku under reservationID, the caller's
// idempotency key: a repeated call with the same ID (after a timeout, say)
// returns the first call's Reservation and reserves nothing more, so it is
// safe to retry. Not enough stock is a client fault matching
// ErrInsufficientStock; an unknown SKU one matching ErrUnknownSKU.
func (c *Client) ReserveItem(ctx context.Context, sku string, qty int, reservationID string) (Reservation, error) {
	switch {
	case sku == "":
		return Reservation{}, refused(OpReserveItem, "sku is required")
	case qty < 1:
		return Reservation{}, refused(OpReserveItem, fmt.Sprintf("quantity must be at least 1, got %d", qty))
	case reservationID == "":
		return Reservation{}, refused(OpReserveItem, "reservation id is required")
	}
	var r soapwire.ReserveItemResponse
	req := soapwire.ReserveItem{SKU: sku, Quantity: qty, ReservationID: reservationID}
	if err := c.call(ctx, OpReserveItem, req, &r); err != nil {
		return Reservation{}, err
	}
	if err := checkResponse(r.SKU, r.Remaining, "remaining"); err != nil {
		return Reservation{}, &Error{Op: OpReserveItem, Kind: KindMalformed, StatusCode: http.StatusOK, Err: err}
	}
	if r.ReservationID != reservationID {
		// An answer to somebody else's reservation must never be taken for
		// ours: the caller would believe stock is held that is not.
		return Reservation{}, &Error{Op: OpReserveItem, Kind: KindMalformed, StatusCode: http.StatusOK,
			Err: fmt.Errorf("answer is for reservation %q, not %q", r.ReservationID, reservationID)}
	}
	return Reservation{ReservationID: r.ReservationID, SKU: r.SKU, Quantity: r.Quantity, Remaining: r.Remaining, ReservedAt: r.ReservedAt}, nil
}

// refused is the error for a request the client will not send.
func refused(op, problem string) *Error {
	return &Error{Op: op, Kind: KindClientFault, Err: errors.New(problem)}
}

// checkResponse checks the fields every answer about an item must have.
func checkResponse(sku string, n int, field string) error {
	if sku == "" {
		return errors.New("sku is missing")
	}
	if n < 0 {
		return fmt.Errorf("%s is negative (%d)", field, n)
	}
	return nil
}

// call sends payload as op and decodes the answer into out.
func (c *Client) call(ctx context.Context, op string, payload, out any) error {
	body, err := soapwire.Marshal(payload)
	if err != nil {
		return &Error{Op: op, Kind: KindClientFault, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return &Error{Op: op, Kind: KindClientFault, Err: err}
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("Accept", "text/xml")
	req.Header.Set("SOAPAction", `"`+soapwire.Action(op)+`"`)
	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(ctx, op, 0, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > c.maxBytes {
		return &Error{Op: op, Kind: KindTooLarge, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("response is %d bytes, the limit is %d (Options.MaxResponseBytes)", resp.ContentLength, c.maxBytes)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return transportError(ctx, op, resp.StatusCode, fmt.Errorf("reading the response: %w", err))
	}
	if int64(len(data)) > c.maxBytes {
		return &Error{Op: op, Kind: KindTooLarge, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("response exceeds the limit of %d bytes (Options.MaxResponseBytes)", c.maxBytes)}
	}
	return parseResponse(op, resp.StatusCode, data, out)
}

// parseResponse turns an HTTP answer into out or an *Error. A SOAP fault is
// recognized whatever the status (SOAP 1.1 says 500, some services say 200);
// a 5xx without one is a transport failure, since it most likely came from a
// proxy or a crashing server rather than from the service's logic.
func parseResponse(op string, status int, data []byte, out any) error {
	d, start, err := soapwire.Open(bytes.NewReader(data))
	if err == nil && soapwire.IsFault(start) {
		var wf soapwire.Fault
		if err := d.DecodeElement(&wf, &start); err != nil {
			return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: fmt.Errorf("decoding the fault: %w", err)}
		}
		f := &Fault{Code: strings.TrimSpace(wf.Code), String: wf.String, Actor: wf.Actor}
		if wf.Detail != nil {
			f.Detail = string(wf.Detail.Inner)
			if inv := wf.Detail.InventoryFault; inv != nil {
				f.Reason, f.Message = strings.TrimSpace(inv.Code), inv.Message
			}
		}
		if f.Code == "" {
			return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: errors.New("fault without faultcode")}
		}
		return &Error{Op: op, Kind: f.kind(), StatusCode: status, Fault: f, Err: f}
	}
	switch {
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		return &Error{Op: op, Kind: KindTransport, StatusCode: status, Err: fmt.Errorf("HTTP %d without a SOAP fault: %s", status, snippet(data))}
	case status < 200 || status > 299:
		return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: fmt.Errorf("HTTP %d without a SOAP fault: %s", status, snippet(data))}
	case err != nil:
		return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: err}
	}
	want := soapwire.NS + " " + op + "Response"
	if got := start.Name.Space + " " + start.Name.Local; got != want {
		return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: fmt.Errorf("body holds {%s}%s, want {%s}%sResponse", start.Name.Space, start.Name.Local, soapwire.NS, op)}
	}
	if err := d.DecodeElement(out, &start); err != nil {
		return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: fmt.Errorf("decoding %sResponse: %w", op, err)}
	}
	if err := soapwire.Finish(d); err != nil {
		return &Error{Op: op, Kind: KindMalformed, StatusCode: status, Err: err}
	}
	return nil
}

// snippet quotes the start of a body that is not SOAP, for the error text.
func snippet(data []byte) string {
	const max = 120
	s := strings.TrimSpace(string(data))
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("%q", s)
}
