// Package soapbridge is Charla's client for the inventory service, a SOAP 1.1
// web service described by inventory.wsdl (exported as WSDL): GetStock,
// SearchProducts and ReserveItem, with SOAP faults and transport failures
// turned into typed errors (Error, Fault, Kind, Retryable), and an inventory
// Cache with a last-known-value fallback for when the service is down.
//
// The Client makes exactly one HTTP request per call and nothing else: no
// retries, no breaker, no cache, no concurrency limit. Those are policy, and
// the engine's soap actor owns them (DESIGN.md, "soapbridge"), so that every
// request the engine sends is one the actor decided to send and counted.
// The per-call timeout is the caller's context deadline.
//
// The package soapbridge/soapsim serves the same WSDL with switchable faults,
// for development and tests.
package soapbridge

import (
	_ "embed" // for WSDL
	"time"

	"charla/soapbridge/internal/soapwire"
)

// WSDL is the inventory service's contract: document/literal SOAP 1.1 over
// HTTP, with its XSD types section. The client follows it (a test checks the
// client's requests against its schema) and the simulator serves it at
// /?wsdl.
//
//go:embed inventory.wsdl
var WSDL []byte

// Namespace is the WSDL's target namespace, the namespace of every request
// and response element.
const Namespace = soapwire.NS

// The operation names, as the WSDL's portType names them; Error.Op is one of
// these.
const (
	OpGetStock       = soapwire.OpGetStock
	OpSearchProducts = soapwire.OpSearchProducts
	OpReserveItem    = soapwire.OpReserveItem
)

// SOAPAction returns the soapAction the WSDL's binding declares for op (sent,
// in double quotes, as the SOAPAction HTTP header).
func SOAPAction(op string) string { return soapwire.Action(op) }

// Item is what GetStock answers: one stock keeping unit in one warehouse.
type Item struct {
	// SKU identifies the item, e.g. "SKU-00042".
	SKU string `json:"sku"`
	// Name is the product's display name.
	Name string `json:"name"`
	// Quantity is the stock available for reservation, never negative.
	Quantity int `json:"quantity"`
	// Warehouse is the code of the warehouse holding the stock.
	Warehouse string `json:"warehouse"`
	// UpdatedAt is when the service last changed this item's stock.
	UpdatedAt time.Time `json:"updated_at"`
}

// Product is one entry of a search result.
type Product struct {
	// SKU identifies the item.
	SKU string `json:"sku"`
	// Name is the product's display name.
	Name string `json:"name"`
	// Quantity is the stock available for reservation.
	Quantity int `json:"quantity"`
}

// Page is one page of SearchProducts results.
type Page struct {
	// Products are this page's entries, in the service's order (by SKU).
	Products []Product `json:"products"`
	// Page is this page's number, 1-based.
	Page int `json:"page"`
	// PageSize is the most entries a page holds; the last page may hold
	// fewer.
	PageSize int `json:"page_size"`
	// Total is how many products match the query across all pages.
	Total int `json:"total"`
}

// Pages is how many pages the whole result has (0 when nothing matched).
func (p Page) Pages() int {
	if p.PageSize <= 0 {
		return 0
	}
	return (p.Total + p.PageSize - 1) / p.PageSize
}

// HasNext reports whether a page follows this one.
func (p Page) HasNext() bool { return p.Page < p.Pages() }

// Reservation is what ReserveItem answers. The service keeps it under its
// ReservationID: asking again with the same ID returns the same Reservation
// and reserves nothing more.
type Reservation struct {
	// ReservationID is the caller's idempotency key.
	ReservationID string `json:"reservation_id"`
	// SKU is the reserved item.
	SKU string `json:"sku"`
	// Quantity is how many units were reserved.
	Quantity int `json:"quantity"`
	// Remaining is the item's stock right after this reservation.
	Remaining int `json:"remaining"`
	// ReservedAt is when the service made the reservation (the first time,
	// for a repeated request).
	ReservedAt time.Time `json:"reserved_at"`
}
