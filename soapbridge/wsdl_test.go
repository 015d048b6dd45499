package soapbridge

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"charla/soapbridge/internal/soapwire"
)

// This file checks envelopes against inventory.wsdl's schema without an XSD
// validator (Go has none, and the tests must need nothing installed). It
// understands the subset of XSD the WSDL uses — global elements with inline
// complex types, named complex types, xs:sequence with minOccurs/maxOccurs,
// and the simple types xs:string, xs:int and xs:dateTime — and fails on
// anything else, so that the WSDL cannot grow a construct the check would
// silently ignore.

const (
	xsdNS      = "http://www.w3.org/2001/XMLSchema"
	wsdlNS     = "http://schemas.xmlsoap.org/wsdl/"
	wsdlSoapNS = "http://schemas.xmlsoap.org/wsdl/soap/"
)

type xsdElement struct {
	Name        string          `xml:"name,attr"`
	Type        string          `xml:"type,attr"`
	MinOccurs   string          `xml:"minOccurs,attr"`
	MaxOccurs   string          `xml:"maxOccurs,attr"`
	ComplexType *xsdComplexType `xml:"http://www.w3.org/2001/XMLSchema complexType"`
	Other       []anyElement    `xml:",any"`
}

type xsdComplexType struct {
	Name     string `xml:"name,attr"`
	Sequence *struct {
		Elements []xsdElement `xml:"http://www.w3.org/2001/XMLSchema element"`
		Other    []anyElement `xml:",any"`
	} `xml:"http://www.w3.org/2001/XMLSchema sequence"`
	Other []anyElement `xml:",any"`
}

type anyElement struct{ XMLName xml.Name }

type wsdlDoc struct {
	Attrs  []xml.Attr `xml:",any,attr"`
	Target string     `xml:"targetNamespace,attr"`
	Types  struct {
		Schema xsdSchema `xml:"http://www.w3.org/2001/XMLSchema schema"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/ types"`
	Messages []struct {
		Name  string `xml:"name,attr"`
		Parts []struct {
			Element string `xml:"element,attr"`
		} `xml:"http://schemas.xmlsoap.org/wsdl/ part"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/ message"`
	PortOps []struct {
		Name   string  `xml:"name,attr"`
		Input  wsdlMsg `xml:"http://schemas.xmlsoap.org/wsdl/ input"`
		Output wsdlMsg `xml:"http://schemas.xmlsoap.org/wsdl/ output"`
		Fault  wsdlMsg `xml:"http://schemas.xmlsoap.org/wsdl/ fault"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/ portType>operation"`
	Binding struct {
		Style struct {
			Style string `xml:"style,attr"`
		} `xml:"http://schemas.xmlsoap.org/wsdl/soap/ binding"`
		Ops []bindingOp `xml:"http://schemas.xmlsoap.org/wsdl/ operation"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/ binding"`
}

type bindingOp struct {
	Name   string `xml:"name,attr"`
	Action struct {
		SOAPAction string `xml:"soapAction,attr"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/soap/ operation"`
	Input struct {
		Body struct {
			Use string `xml:"use,attr"`
		} `xml:"http://schemas.xmlsoap.org/wsdl/soap/ body"`
	} `xml:"http://schemas.xmlsoap.org/wsdl/ input"`
}

type xsdSchema struct {
	Target       string           `xml:"targetNamespace,attr"`
	FormDefault  string           `xml:"elementFormDefault,attr"`
	Elements     []xsdElement     `xml:"http://www.w3.org/2001/XMLSchema element"`
	ComplexTypes []xsdComplexType `xml:"http://www.w3.org/2001/XMLSchema complexType"`
	Other        []anyElement     `xml:",any"`
}

type wsdlMsg struct {
	Message string `xml:"message,attr"`
}

// schema is the parsed contract: global elements and named types by
// (namespace, local name), and each operation's input, output and fault
// element.
type schema struct {
	target   string
	prefixes map[string]string
	elements map[xml.Name]xsdElement
	types    map[xml.Name]xsdComplexType
	ops      map[string]struct{ in, out, fault xml.Name }
	actions  map[string]string
}

func loadSchema(t testing.TB) *schema {
	t.Helper()
	var doc wsdlDoc
	if err := xml.Unmarshal(WSDL, &doc); err != nil {
		t.Fatalf("WSDL: %v", err)
	}
	s := &schema{
		target:   doc.Types.Schema.Target,
		prefixes: map[string]string{},
		elements: map[xml.Name]xsdElement{},
		types:    map[xml.Name]xsdComplexType{},
		ops:      map[string]struct{ in, out, fault xml.Name }{},
		actions:  map[string]string{},
	}
	for _, a := range doc.Attrs {
		if a.Name.Space == "xmlns" {
			s.prefixes[a.Name.Local] = a.Value
		}
	}
	if s.target != Namespace || doc.Target != Namespace || doc.Types.Schema.FormDefault != "qualified" {
		t.Fatalf("WSDL: target namespaces %q/%q, elementFormDefault %q", doc.Target, s.target, doc.Types.Schema.FormDefault)
	}
	if len(doc.Types.Schema.Other) > 0 {
		t.Fatalf("WSDL: the check does not understand %v", doc.Types.Schema.Other)
	}
	for _, e := range doc.Types.Schema.Elements {
		s.elements[xml.Name{Space: s.target, Local: e.Name}] = e
	}
	for _, ct := range doc.Types.Schema.ComplexTypes {
		s.types[xml.Name{Space: s.target, Local: ct.Name}] = ct
	}
	msgElem := map[xml.Name]xml.Name{}
	for _, m := range doc.Messages {
		if len(m.Parts) != 1 {
			t.Fatalf("WSDL: message %s has %d parts; document/literal wrapped wants 1", m.Name, len(m.Parts))
		}
		el := s.qname(t, m.Parts[0].Element)
		if _, ok := s.elements[el]; !ok {
			t.Fatalf("WSDL: message %s names element %s, which the schema does not define", m.Name, el.Local)
		}
		msgElem[xml.Name{Space: doc.Target, Local: m.Name}] = el
	}
	for _, op := range doc.PortOps {
		s.ops[op.Name] = struct{ in, out, fault xml.Name }{
			msgElem[s.qname(t, op.Input.Message)], msgElem[s.qname(t, op.Output.Message)], msgElem[s.qname(t, op.Fault.Message)]}
	}
	if doc.Binding.Style.Style != "document" {
		t.Fatalf("WSDL: binding style %q, want document", doc.Binding.Style.Style)
	}
	for _, op := range doc.Binding.Ops {
		if op.Input.Body.Use != "literal" {
			t.Fatalf("WSDL: %s: use %q, want literal", op.Name, op.Input.Body.Use)
		}
		s.actions[op.Name] = op.Action.SOAPAction
	}
	return s
}

// qname resolves a QName attribute value with the WSDL root's prefixes.
func (s *schema) qname(t testing.TB, v string) xml.Name {
	prefix, local, ok := strings.Cut(v, ":")
	if !ok {
		t.Fatalf("WSDL: %q is not a prefixed QName", v)
	}
	ns, ok := s.prefixes[prefix]
	if !ok {
		t.Fatalf("WSDL: prefix %q of %q is not declared", prefix, v)
	}
	return xml.Name{Space: ns, Local: local}
}

// node is an element of a document under check.
type node struct {
	name     xml.Name
	attrs    []xml.Attr
	children []*node
	text     strings.Builder
}

func parseTree(data []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var stack []*node
	var root *node
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			if root == nil {
				return nil, errors.New("no root element")
			}
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{name: t.Name}
			for _, a := range t.Attr {
				if a.Name.Space != "xmlns" && a.Name.Local != "xmlns" {
					n.attrs = append(n.attrs, a)
				}
			}
			if len(stack) == 0 {
				root = n
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			}
		}
	}
}

// checkEnvelope checks a whole SOAP message whose body must hold the
// element want (or a Fault whose detail holds the operation's fault
// element, when fault is true).
func (s *schema) checkEnvelope(data []byte, want xml.Name, fault bool) error {
	root, err := parseTree(data)
	if err != nil {
		return fmt.Errorf("not XML: %w", err)
	}
	if root.name != (xml.Name{Space: soapwire.EnvNS, Local: "Envelope"}) {
		return fmt.Errorf("root is %v, want soap:Envelope", root.name)
	}
	kids := root.children
	if len(kids) > 0 && kids[0].name == (xml.Name{Space: soapwire.EnvNS, Local: "Header"}) {
		kids = kids[1:]
	}
	if len(kids) != 1 || kids[0].name != (xml.Name{Space: soapwire.EnvNS, Local: "Body"}) {
		return errors.New("envelope must hold an optional Header and one Body")
	}
	body := kids[0].children
	if len(body) != 1 {
		return fmt.Errorf("body holds %d elements, want 1", len(body))
	}
	el := body[0]
	if fault {
		if el.name != (xml.Name{Space: soapwire.EnvNS, Local: "Fault"}) {
			return fmt.Errorf("body holds %v, want soap:Fault", el.name)
		}
		var detail *node
		for _, c := range el.children {
			switch c.name {
			case xml.Name{Local: "faultcode"}, xml.Name{Local: "faultstring"}, xml.Name{Local: "faultactor"}:
			case xml.Name{Local: "detail"}:
				detail = c
			default:
				return fmt.Errorf("fault holds %v", c.name)
			}
		}
		if detail == nil || len(detail.children) != 1 {
			return errors.New("fault must have a detail with one element")
		}
		el = detail.children[0]
	}
	if el.name != want {
		return fmt.Errorf("element is {%s}%s, want {%s}%s", el.name.Space, el.name.Local, want.Space, want.Local)
	}
	decl, ok := s.elements[want]
	if !ok {
		return fmt.Errorf("the schema defines no element %s", want.Local)
	}
	return s.checkElement(el, decl, want.Local)
}

// checkElement checks n against its declaration; path names it in errors.
func (s *schema) checkElement(n *node, decl xsdElement, path string) error {
	if len(n.attrs) > 0 {
		return fmt.Errorf("%s: attribute %v not in the schema", path, n.attrs[0].Name)
	}
	if len(decl.Other) > 0 {
		return fmt.Errorf("%s: the check does not understand %v", path, decl.Other[0].XMLName)
	}
	ct := decl.ComplexType
	if ct == nil {
		prefix, local, _ := strings.Cut(decl.Type, ":")
		switch ns := s.prefixes[prefix]; ns {
		case xsdNS:
			return checkSimple(n, local, path)
		case s.target:
			named, ok := s.types[xml.Name{Space: ns, Local: local}]
			if !ok {
				return fmt.Errorf("%s: type %s is not defined", path, decl.Type)
			}
			ct = &named
		default:
			return fmt.Errorf("%s: type %q is not supported by the check", path, decl.Type)
		}
	}
	if len(ct.Other) > 0 || ct.Sequence == nil || len(ct.Sequence.Other) > 0 {
		return fmt.Errorf("%s: only xs:sequence of xs:element is supported by the check", path)
	}
	if strings.TrimSpace(n.text.String()) != "" {
		return fmt.Errorf("%s: text in an element of complex type", path)
	}
	kids := n.children
	for _, child := range ct.Sequence.Elements {
		lo, hi, err := occurs(child)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", path, child.Name, err)
		}
		name := xml.Name{Space: s.target, Local: child.Name} // elementFormDefault="qualified"
		count := 0
		for len(kids) > 0 && kids[0].name == name {
			if err := s.checkElement(kids[0], child, path+"/"+child.Name); err != nil {
				return err
			}
			kids = kids[1:]
			count++
		}
		if count < lo || count > hi {
			return fmt.Errorf("%s/%s: occurs %d times, want %d to %d", path, child.Name, count, lo, hi)
		}
	}
	if len(kids) > 0 {
		return fmt.Errorf("%s: unexpected element {%s}%s (not in the schema's sequence, or out of order)",
			path, kids[0].name.Space, kids[0].name.Local)
	}
	return nil
}

func occurs(e xsdElement) (lo, hi int, err error) {
	lo, hi = 1, 1
	if e.MinOccurs != "" {
		if lo, err = strconv.Atoi(e.MinOccurs); err != nil {
			return 0, 0, err
		}
	}
	switch e.MaxOccurs {
	case "":
	case "unbounded":
		hi = math.MaxInt
	default:
		if hi, err = strconv.Atoi(e.MaxOccurs); err != nil {
			return 0, 0, err
		}
	}
	return lo, hi, nil
}

func checkSimple(n *node, typ, path string) error {
	if len(n.children) > 0 {
		return fmt.Errorf("%s: element children in a simple-typed element", path)
	}
	v := n.text.String()
	switch typ {
	case "string":
		return nil
	case "int":
		if _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err != nil {
			return fmt.Errorf("%s: %q is not an xs:int", path, v)
		}
	case "dateTime":
		if _, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(v)); err != nil {
			return fmt.Errorf("%s: %q is not an xs:dateTime", path, v)
		}
	default:
		return fmt.Errorf("%s: type xs:%s is not supported by the check", path, typ)
	}
	return nil
}

// TestWSDLContract checks the WSDL against the client's constants: the same
// operations, the same soapActions, elements named after the operations.
func TestWSDLContract(t *testing.T) {
	s := loadSchema(t)
	if len(s.ops) != len(soapwire.Ops) {
		t.Errorf("WSDL has %d operations, the client %d", len(s.ops), len(soapwire.Ops))
	}
	for _, op := range soapwire.Ops {
		o, ok := s.ops[op]
		if !ok {
			t.Errorf("WSDL lacks operation %s", op)
			continue
		}
		if o.in.Local != op || o.out.Local != op+"Response" || o.fault.Local != "InventoryFault" {
			t.Errorf("%s: elements %s, %s, %s", op, o.in.Local, o.out.Local, o.fault.Local)
		}
		if s.actions[op] != SOAPAction(op) {
			t.Errorf("%s: WSDL soapAction %q, client sends %q", op, s.actions[op], SOAPAction(op))
		}
	}
}

// TestWSDLChecker proves the check can fail: each envelope breaks the
// schema in one way.
func TestWSDLChecker(t *testing.T) {
	s := loadSchema(t)
	env := func(inner string) []byte {
		return []byte(`<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>` + inner + `</soap:Body></soap:Envelope>`)
	}
	reserve := xml.Name{Space: Namespace, Local: "ReserveItem"}
	cases := []struct {
		name string
		body string
		ok   bool
	}{
		{"valid", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId></ReserveItem>`, true},
		{"extra field", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId><note>x</note></ReserveItem>`, false},
		{"missing field", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>1</quantity></ReserveItem>`, false},
		{"wrong order", `<ReserveItem xmlns="urn:charla:inventory:v1"><quantity>1</quantity><sku>A</sku><reservationId>r</reservationId></ReserveItem>`, false},
		{"not an int", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>1.5</quantity><reservationId>r</reservationId></ReserveItem>`, false},
		{"int overflow", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>99999999999</quantity><reservationId>r</reservationId></ReserveItem>`, false},
		{"unqualified children", `<i:ReserveItem xmlns:i="urn:charla:inventory:v1"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId></i:ReserveItem>`, false},
		{"wrong namespace", `<ReserveItem xmlns="urn:other"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId></ReserveItem>`, false},
		{"attribute", `<ReserveItem xmlns="urn:charla:inventory:v1" x="1"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId></ReserveItem>`, false},
		{"two elements", `<ReserveItem xmlns="urn:charla:inventory:v1"><sku>A</sku><quantity>1</quantity><reservationId>r</reservationId></ReserveItem><x/>`, false},
	}
	for _, tc := range cases {
		err := s.checkEnvelope(env(tc.body), reserve, false)
		if (err == nil) != tc.ok {
			t.Errorf("%s: check = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestWSDLMessages checks what the client sends for every operation, and
// what the simulator answers (results and faults), against the WSDL. The
// envelopes come from soapwire, which both sides use; the test in
// soapbridge_test (TestWSDLOverHTTP) checks the bytes that actually cross
// the wire.
func TestWSDLMessages(t *testing.T) {
	s := loadSchema(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	msgs := []struct {
		op      string
		payload any
		dir     string
	}{
		{OpGetStock, soapwire.GetStock{SKU: "SKU-00001"}, "in"},
		{OpSearchProducts, soapwire.SearchProducts{Query: "mug", Page: 1, PageSize: 20}, "in"},
		{OpSearchProducts, soapwire.SearchProducts{Page: 2, PageSize: 20}, "in"},
		{OpReserveItem, soapwire.ReserveItem{SKU: "SKU-00001", Quantity: 2, ReservationID: "r-1"}, "in"},
		{OpGetStock, soapwire.GetStockResponse{SKU: "A", Name: "n", Quantity: 1, Warehouse: "w", UpdatedAt: at}, "out"},
		{OpSearchProducts, soapwire.SearchProductsResponse{Page: 1, PageSize: 20, Total: 0}, "out"},
		{OpSearchProducts, soapwire.SearchProductsResponse{Page: 1, PageSize: 20, Total: 2,
			Products: []soapwire.Product{{SKU: "A", Name: "n", Quantity: 1}, {SKU: "B", Name: "m", Quantity: 0}}}, "out"},
		{OpReserveItem, soapwire.ReserveItemResponse{ReservationID: "r", SKU: "A", Quantity: 1, Remaining: 0, ReservedAt: at}, "out"},
		{OpReserveItem, soapwire.Fault{Code: "soap:Client", String: "x",
			Detail: &soapwire.Detail{InventoryFault: &soapwire.InventoryFault{Code: ReasonUnknownSKU, Message: "x"}}}, "fault"},
	}
	for _, m := range msgs {
		data, err := soapwire.Marshal(m.payload)
		if err != nil {
			t.Fatal(err)
		}
		o := s.ops[m.op]
		want := map[string]xml.Name{"in": o.in, "out": o.out, "fault": o.fault}[m.dir]
		if err := s.checkEnvelope(data, want, m.dir == "fault"); err != nil {
			t.Errorf("%s %s: %v\n%s", m.op, m.dir, err, data)
		}
	}
	if !slices.Equal(soapwire.Ops, []string{OpGetStock, OpSearchProducts, OpReserveItem}) {
		t.Errorf("Ops = %v", soapwire.Ops)
	}
}

// CheckEnvelopeForTest exposes the check to the external test package.
func CheckEnvelopeForTest(t testing.TB, data []byte, op, dir string) error {
	s := loadSchema(t)
	o := s.ops[op]
	want := map[string]xml.Name{"in": o.in, "out": o.out, "fault": o.fault}[dir]
	return s.checkEnvelope(data, want, dir == "fault")
}
