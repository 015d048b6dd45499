package client

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"charla"
	"charla/wire"
)

// The bench reads tens of thousands of msg and ack objects per second on a
// machine whose cores it shares with the engine it measures, and
// encoding/json spends most of the bench's CPU on them (reflection, time
// parsing of "ts"). decodeHot reads exactly the fields the bench uses from
// those two frame types, and gives up (so that the caller falls back to
// json.Unmarshal) on anything it does not fully understand: another type,
// an escape inside a string it keeps, a malformed object. It never guesses.
//
// It fills Type, Ref, Conv, Seq, ClientMsgID, Body (copied) and Duplicate;
// Sender and TS are skipped (left zero).

var (
	prefixMsg = []byte(`{"type":"msg"`)
	prefixAck = []byte(`{"type":"ack"`)
)

func decodeHot(b []byte, f *wire.Frame) bool {
	switch {
	case bytes.HasPrefix(b, prefixMsg):
		f.Type = wire.TypeMsg
	case bytes.HasPrefix(b, prefixAck):
		f.Type = wire.TypeAck
	default:
		return false
	}
	if !json.Valid(b) {
		return false
	}
	i := len(prefixMsg)
	for n := 0; n < 64; n++ { // a hot frame has fewer than 64 keys
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case '}':
			return skipSpace(b, i+1) == len(b)
		case ',':
			i++
		default:
			return false
		}
		i = skipSpace(b, i)
		key, next, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		end, ok := skipValue(b, i)
		if !ok {
			return false
		}
		v := b[i:end]
		if !exactKey(key) {
			return false // e.g. "Conv": encoding/json folds case, let it
		}
		switch string(key) {
		case "type":
			return false // a second "type": let the full decoder decide
		case "conv", "client_msg_id", "ref":
			s, _, ok := plainString(v, 0)
			if !ok || !utf8.Valid(s) { // encoding/json would replace bad bytes
				return false
			}
			switch string(key) {
			case "conv":
				f.Conv = charla.ConvID(s)
			case "client_msg_id":
				f.ClientMsgID = string(s)
			default:
				f.Ref = string(s)
			}
		case "seq":
			var seq uint64
			if len(v) == 0 || len(v) > 19 {
				return false
			}
			for _, c := range v {
				if c < '0' || c > '9' {
					return false
				}
				seq = seq*10 + uint64(c-'0')
			}
			f.Seq = charla.Seq(seq)
		case "duplicate":
			switch string(v) {
			case "true":
				f.Duplicate = true
			case "false":
				f.Duplicate = false
			default:
				return false
			}
		case "body":
			if len(v) == 0 || v[0] != '{' {
				return false
			}
			f.Body = append(json.RawMessage(nil), v...)
		}
		i = end
	}
	return false
}

// hotKeys are the keys decodeHot reads or must not see twice.
var hotKeys = [][]byte{[]byte("type"), []byte("ref"), []byte("conv"), []byte("seq"), []byte("client_msg_id"), []byte("body"), []byte("duplicate")}

// exactKey reports false for a key that encoding/json's case-insensitive
// matching would map onto a hot field without being spelled exactly so.
func exactKey(k []byte) bool {
	for _, h := range hotKeys {
		if bytes.EqualFold(k, h) && !bytes.Equal(k, h) {
			return false
		}
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string starting at b[i] that has no escapes
// and no control characters, returning its contents and the index after
// its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipValue returns the index after the JSON value starting at b[i] of a
// document already known to be valid. It tracks strings (with escapes) and
// nesting.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, true
			}
		}
		return 0, false
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := skipValue(b, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		return j, j > i
	}
}
