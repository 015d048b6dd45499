// Package soapwire holds the XML shapes of the inventory service's SOAP 1.1
// messages and the envelope plumbing, shared by the client (soapbridge) and
// the simulator (soapbridge/soapsim) so that the two cannot drift apart by a
// typo. Neither side's correctness rests on sharing them: soapbridge's WSDL
// test checks what the client sends, and what the simulator answers, against
// the schema in inventory.wsdl, which is the contract with the real service.
package soapwire

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Namespaces of the messages.
const (
	// EnvNS is the SOAP 1.1 envelope namespace.
	EnvNS = "http://schemas.xmlsoap.org/soap/envelope/"
	// NS is the inventory service's target namespace (inventory.wsdl).
	NS = "urn:charla:inventory:v1"
)

// The operations, as named in the WSDL's portType.
const (
	OpGetStock       = "GetStock"
	OpSearchProducts = "SearchProducts"
	OpReserveItem    = "ReserveItem"
)

// Ops lists the operations in the WSDL's order.
var Ops = []string{OpGetStock, OpSearchProducts, OpReserveItem}

// Action is the soapAction of op, as the WSDL's binding declares it. The
// SOAPAction HTTP header carries it in double quotes.
func Action(op string) string { return NS + "/" + op }

// Fault reasons: the code element of the InventoryFault detail, which says
// what exactly was wrong beyond the Client/Server faultcode.
const (
	ReasonUnknownSKU          = "unknown_sku"
	ReasonInsufficientStock   = "insufficient_stock"
	ReasonInvalidRequest      = "invalid_request"
	ReasonReservationConflict = "reservation_conflict"
	ReasonInternal            = "internal"
)

// GetStock is the GetStock request element.
type GetStock struct {
	XMLName xml.Name `xml:"urn:charla:inventory:v1 GetStock"`
	SKU     string   `xml:"sku"`
}

// GetStockResponse is the GetStock response element.
type GetStockResponse struct {
	XMLName   xml.Name  `xml:"urn:charla:inventory:v1 GetStockResponse"`
	SKU       string    `xml:"sku"`
	Name      string    `xml:"name"`
	Quantity  int       `xml:"quantity"`
	Warehouse string    `xml:"warehouse"`
	UpdatedAt time.Time `xml:"updatedAt"`
}

// SearchProducts is the SearchProducts request element. Page is 1-based.
type SearchProducts struct {
	XMLName  xml.Name `xml:"urn:charla:inventory:v1 SearchProducts"`
	Query    string   `xml:"query"`
	Page     int      `xml:"page"`
	PageSize int      `xml:"pageSize"`
}

// Product is one entry of a search result page.
type Product struct {
	SKU      string `xml:"sku"`
	Name     string `xml:"name"`
	Quantity int    `xml:"quantity"`
}

// SearchProductsResponse is the SearchProducts response element.
type SearchProductsResponse struct {
	XMLName  xml.Name  `xml:"urn:charla:inventory:v1 SearchProductsResponse"`
	Page     int       `xml:"page"`
	PageSize int       `xml:"pageSize"`
	Total    int       `xml:"total"`
	Products []Product `xml:"product"`
}

// ReserveItem is the ReserveItem request element.
type ReserveItem struct {
	XMLName       xml.Name `xml:"urn:charla:inventory:v1 ReserveItem"`
	SKU           string   `xml:"sku"`
	Quantity      int      `xml:"quantity"`
	ReservationID string   `xml:"reservationId"`
}

// ReserveItemResponse is the ReserveItem response element.
type ReserveItemResponse struct {
	XMLName       xml.Name  `xml:"urn:charla:inventory:v1 ReserveItemResponse"`
	ReservationID string    `xml:"reservationId"`
	SKU           string    `xml:"sku"`
	Quantity      int       `xml:"quantity"`
	Remaining     int       `xml:"remaining"`
	ReservedAt    time.Time `xml:"reservedAt"`
}

// Fault is a SOAP 1.1 Fault element. Its children are unqualified, as SOAP
// 1.1 defines them.
type Fault struct {
	XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault"`
	Code    string   `xml:"faultcode"`
	String  string   `xml:"faultstring"`
	Actor   string   `xml:"faultactor,omitempty"`
	Detail  *Detail  `xml:"detail,omitempty"`
}

// Detail is a fault's detail element; the inventory service puts one
// InventoryFault in it.
type Detail struct {
	InventoryFault *InventoryFault `xml:"urn:charla:inventory:v1 InventoryFault,omitempty"`
	Inner          []byte          `xml:",innerxml"`
}

// InventoryFault says which inventory rule a request broke.
type InventoryFault struct {
	XMLName xml.Name `xml:"urn:charla:inventory:v1 InventoryFault"`
	Code    string   `xml:"code"`
	Message string   `xml:"message"`
}

const (
	envOpen  = `<?xml version="1.0" encoding="utf-8"?>` + "\n" + `<soap:Envelope xmlns:soap="` + EnvNS + `"><soap:Body>`
	envClose = `</soap:Body></soap:Envelope>`
)

// faultOut is Fault as written: with the envelope's soap prefix, declared on
// the Envelope, rather than a default namespace, which would wrongly
// qualify faultcode, faultstring and detail (SOAP 1.1 leaves them
// unqualified).
type faultOut struct {
	XMLName xml.Name `xml:"soap:Fault"`
	Code    string   `xml:"faultcode"`
	String  string   `xml:"faultstring"`
	Actor   string   `xml:"faultactor,omitempty"`
	Detail  *Detail  `xml:"detail,omitempty"`
}

// Marshal wraps payload (one of the element types above) in a SOAP envelope.
// The envelope is written by hand because encoding/xml cannot give the
// envelope namespace a prefix; the payload then declares the service
// namespace as its default, which its unprefixed children inherit.
func Marshal(payload any) ([]byte, error) {
	if f, ok := payload.(Fault); ok {
		payload = faultOut{Code: f.Code, String: f.String, Actor: f.Actor, Detail: f.Detail}
	}
	var b bytes.Buffer
	b.WriteString(envOpen)
	if err := xml.NewEncoder(&b).Encode(payload); err != nil {
		return nil, fmt.Errorf("soapwire: marshal %T: %w", payload, err)
	}
	b.WriteString(envClose)
	return b.Bytes(), nil
}

// ErrNotEnvelope is returned by Open when the document is well-formed so far
// but is not a SOAP 1.1 envelope with a body holding one element.
var ErrNotEnvelope = errors.New("not a SOAP 1.1 envelope")

// Open reads r up to the first element inside the envelope's Body and
// returns a decoder positioned right after that element's start tag, and the
// start tag itself, so that the caller can decode it (DecodeElement) as what
// its name says. Walking tokens, rather than unmarshalling Body's inner XML,
// keeps the namespace declarations made on the Envelope in scope. Headers are
// skipped: the inventory service defines none.
func Open(r io.Reader) (*xml.Decoder, xml.StartElement, error) {
	d := xml.NewDecoder(r)
	// The service and the simulator speak UTF-8 only; a document declaring
	// another encoding fails here instead of being misread.
	d.CharsetReader = func(charset string, input io.Reader) (io.Reader, error) {
		if strings.EqualFold(charset, "utf-8") || strings.EqualFold(charset, "utf8") {
			return input, nil
		}
		return nil, fmt.Errorf("unsupported charset %q", charset)
	}
	// Envelope, then Body, then its first element.
	want := []string{"Envelope", "Body"}
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, xml.StartElement{}, fmt.Errorf("%w: document ends early", ErrNotEnvelope)
			}
			return nil, xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == len(want) {
				return d, t, nil
			}
			if t.Name.Space == EnvNS && t.Name.Local == "Header" && depth == 1 {
				if err := d.Skip(); err != nil {
					return nil, xml.StartElement{}, err
				}
				continue
			}
			if t.Name.Space != EnvNS || t.Name.Local != want[depth] {
				return nil, xml.StartElement{}, fmt.Errorf("%w: found element {%s}%s where soap:%s belongs",
					ErrNotEnvelope, t.Name.Space, t.Name.Local, want[depth])
			}
			depth++
		case xml.EndElement:
			return nil, xml.StartElement{}, fmt.Errorf("%w: soap:Body is empty", ErrNotEnvelope)
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, xml.StartElement{}, fmt.Errorf("%w: text outside elements", ErrNotEnvelope)
			}
		}
	}
}

// Finish reads what follows the body element and reports an error unless the
// rest of the document is well-formed and holds no second body element, so
// that a truncated response is never taken for a complete one.
func Finish(d *xml.Decoder) error {
	depth := 2 // inside Envelope and Body
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			if depth != 0 {
				return fmt.Errorf("%w: document ends inside the envelope", ErrNotEnvelope)
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return fmt.Errorf("%w: unexpected element {%s}%s after the body element", ErrNotEnvelope, t.Name.Space, t.Name.Local)
		case xml.EndElement:
			depth--
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return fmt.Errorf("%w: text outside elements", ErrNotEnvelope)
			}
		}
	}
}

// IsFault reports whether a body element is a SOAP Fault.
func IsFault(start xml.StartElement) bool {
	return start.Name.Space == EnvNS && start.Name.Local == "Fault"
}
