package soapsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"charla/soapbridge/internal/soapwire"
)

// The fault modes, as named in the admin JSON and in Stats.Faults.
const (
	ModeLatency   = "latency"
	ModeHang      = "hang"
	ModeReset     = "reset"
	ModeHTTP500   = "http_500"
	ModeSOAPFault = "soap_fault"
	ModeMalformed = "malformed"
	ModeOversized = "oversized"
)

// exclusiveModes are the modes that replace the answer, in the order one
// random draw is compared against their cumulative probabilities.
var exclusiveModes = []string{ModeHang, ModeReset, ModeHTTP500, ModeSOAPFault, ModeMalformed, ModeOversized}

// MaxLatencyMS bounds latency_ms: ten minutes is beyond any client timeout
// worth testing; a larger number is a typo.
const MaxLatencyMS = 600_000

// FaultSet says how the simulator misbehaves for one operation (or all).
//
// Latency delays the answer: LatencyMS plus a uniform amount in
// [-JitterMS, +JitterMS], with probability LatencyProbability (0 means 1, so
// that {"latency_ms":200} delays every call). Then at most one of the other
// modes replaces the normal answer, each with its probability (their sum is
// at most 1):
//   - Hang: no answer at all, until the client gives up or the server shuts
//     down (then the connection is dropped).
//   - Reset: the connection is closed with SO_LINGER 0 (a TCP RST) right
//     after the request is read.
//   - HTTP500: a plain-text HTTP 500, no SOAP fault.
//   - SOAPFault: an HTTP 500 carrying a soap:Server fault.
//   - Malformed: an HTTP 200 whose XML is cut off in the middle.
//   - Oversized: an HTTP 200 carrying a valid answer padded to
//     Options.OversizeBytes, without Content-Length (chunked).
type FaultSet struct {
	// LatencyMS is the added delay in milliseconds, 0 to MaxLatencyMS.
	LatencyMS int `json:"latency_ms"`
	// JitterMS spreads the delay uniformly by ± this much, at most LatencyMS.
	JitterMS int `json:"jitter_ms"`
	// LatencyProbability is the chance a call is delayed; 0 means 1.
	LatencyProbability float64 `json:"latency_probability"`
	// Hang is the chance a call is never answered.
	Hang float64 `json:"hang"`
	// Reset is the chance the connection is reset.
	Reset float64 `json:"reset"`
	// HTTP500 is the chance of a plain HTTP 500.
	HTTP500 float64 `json:"http_500"`
	// SOAPFault is the chance of a soap:Server fault.
	SOAPFault float64 `json:"soap_fault"`
	// Malformed is the chance of truncated XML.
	Malformed float64 `json:"malformed"`
	// Oversized is the chance of an answer of Options.OversizeBytes.
	Oversized float64 `json:"oversized"`
}

// probabilities returns the exclusive modes' probabilities in
// exclusiveModes order.
func (f FaultSet) probabilities() []float64 {
	return []float64{f.Hang, f.Reset, f.HTTP500, f.SOAPFault, f.Malformed, f.Oversized}
}

// Faults is the simulator's whole fault configuration: a FaultSet for every
// operation, and per-operation sets that replace it (entirely, not field by
// field) for the operations they name. The zero value injects nothing.
type Faults struct {
	FaultSet
	// Operations maps an operation name (GetStock, SearchProducts,
	// ReserveItem) to its own FaultSet.
	Operations map[string]FaultSet `json:"operations,omitempty"`
}

// For returns the FaultSet that applies to op.
func (f Faults) For(op string) FaultSet {
	if s, ok := f.Operations[op]; ok {
		return s
	}
	return f.FaultSet
}

// Validate reports every problem of f at once, joined with errors.Join, each
// naming the JSON field ("operations.GetStock.hang: ...").
func (f Faults) Validate() error {
	var errs []error
	f.FaultSet.validate("", &errs)
	ops := make([]string, 0, len(f.Operations))
	for op := range f.Operations {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		prefix := "operations." + op + "."
		if !slices.Contains(soapwire.Ops, op) {
			errs = append(errs, fmt.Errorf("operations.%s: unknown operation (want one of %s)", op, strings.Join(soapwire.Ops, ", ")))
			continue
		}
		f.Operations[op].validate(prefix, &errs)
	}
	return errors.Join(errs...)
}

func (f FaultSet) validate(prefix string, errs *[]error) {
	bad := func(field, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	if f.LatencyMS < 0 || f.LatencyMS > MaxLatencyMS {
		bad("latency_ms", "must be 0 to %d, got %d", MaxLatencyMS, f.LatencyMS)
	}
	if f.JitterMS < 0 {
		bad("jitter_ms", "must not be negative, got %d", f.JitterMS)
	} else if f.JitterMS > f.LatencyMS && f.LatencyMS >= 0 {
		bad("jitter_ms", "must not exceed latency_ms (%d), got %d", f.LatencyMS, f.JitterMS)
	}
	checkP := func(field string, p float64) {
		if math.IsNaN(p) || p < 0 || p > 1 {
			bad(field, "must be a probability from 0 to 1, got %v", p)
		}
	}
	checkP("latency_probability", f.LatencyProbability)
	sum := 0.0
	for i, p := range f.probabilities() {
		checkP(exclusiveModes[i], p)
		sum += p
	}
	if sum > 1+1e-9 {
		bad(strings.Join(exclusiveModes, "+"), "probabilities add up to %v; at most one mode replaces an answer, so their sum must be at most 1", sum)
	}
}

// faultSetFields are the JSON fields of a FaultSet, for the unknown-field
// check of ParseFaults.
var faultSetFields = []string{"latency_ms", "jitter_ms", "latency_probability",
	ModeHang, ModeReset, ModeHTTP500, ModeSOAPFault, ModeMalformed, ModeOversized}

// ParseFaults decodes the admin JSON of a Faults and validates it, reporting
// every problem at once: syntax, unknown fields, wrong types, values out of
// range. (encoding/json's DisallowUnknownFields stops at the first one.)
func ParseFaults(data []byte) (Faults, error) {
	var f Faults
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return f, fmt.Errorf("body must be a JSON object: %w", err)
	}
	var errs []error
	decodeSet(top, "", []string{"operations"}, &f.FaultSet, &errs)
	if raw, ok := top["operations"]; ok && string(raw) != "null" {
		var ops map[string]map[string]json.RawMessage
		if err := json.Unmarshal(raw, &ops); err != nil {
			errs = append(errs, fmt.Errorf("operations: must be an object of objects: %v", err))
		} else {
			f.Operations = make(map[string]FaultSet, len(ops))
			names := make([]string, 0, len(ops))
			for op := range ops {
				names = append(names, op)
			}
			sort.Strings(names)
			for _, op := range names {
				var s FaultSet
				decodeSet(ops[op], "operations."+op+".", nil, &s, &errs)
				f.Operations[op] = s
			}
		}
	}
	if err := f.Validate(); err != nil {
		errs = append(errs, err)
	}
	return f, errors.Join(errs...)
}

// decodeSet fills s from the fields of obj, reporting unknown fields (other
// than those in extra) and values of the wrong type.
func decodeSet(obj map[string]json.RawMessage, prefix string, extra []string, s *FaultSet, errs *[]error) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(faultSetFields, k) && !slices.Contains(extra, k) {
			*errs = append(*errs, fmt.Errorf("%s%s: unknown field (known: %s)", prefix, k, strings.Join(faultSetFields, ", ")))
		}
	}
	// Decoding the known fields one by one names each mistyped one.
	one := func(k string, dst any) {
		raw, ok := obj[k]
		if !ok {
			return
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		if err := d.Decode(dst); err != nil {
			*errs = append(*errs, fmt.Errorf("%s%s: %s is not a %s", prefix, k, raw, typeName(dst)))
		}
	}
	one("latency_ms", &s.LatencyMS)
	one("jitter_ms", &s.JitterMS)
	one("latency_probability", &s.LatencyProbability)
	one(ModeHang, &s.Hang)
	one(ModeReset, &s.Reset)
	one(ModeHTTP500, &s.HTTP500)
	one(ModeSOAPFault, &s.SOAPFault)
	one(ModeMalformed, &s.Malformed)
	one(ModeOversized, &s.Oversized)
}

func typeName(dst any) string {
	if _, ok := dst.(*int); ok {
		return "whole number"
	}
	return "number"
}
