package pebble

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"charla"
	"charla/store"
)

// Key kinds: the first byte of every key, so that messages, dedup entries and
// read cursors live in disjoint ranges of the key space and a scan of one
// kind never steps over the others.
const (
	kindMeta byte = 0x00 // store-wide metadata (the schema version)
	kindID   byte = 'i'  // (conv, client_msg_id) → seq ‖ TS
	kindMsg  byte = 'm'  // (conv, seq) → message record
	kindRead byte = 'r'  // (conv, user) → seq
)

// keyVersion holds the schema version of the store.
var keyVersion = []byte{kindMeta, 'v', 'e', 'r', 's', 'i', 'o', 'n'}

// convPrefix appends kind ‖ uvarint(len(conv)) ‖ conv to dst. A uvarint is a
// prefix-free code, so the length and the bytes it announces together are
// too: no conversation's prefix is a prefix of another's, whatever bytes the
// IDs hold, and so no conversation's keys can fall inside another's range
// ("a" and "a:1", or IDs with 0x00 or 0xff in them).
func convPrefix(dst []byte, kind byte, conv charla.ConvID) []byte {
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(len(conv)))
	return append(dst, conv...)
}

// msgKey is the key of message seq of conv. The seq is 8 bytes big-endian so
// that byte order is seq order: a conversation's log is one contiguous,
// ordered range, and appends to it always land at its end.
func msgKey(conv charla.ConvID, seq charla.Seq) []byte {
	k := convPrefix(make([]byte, 0, 1+2+len(conv)+8), kindMsg, conv)
	return binary.BigEndian.AppendUint64(k, uint64(seq))
}

// idKey is the key of the dedup entry of (conv, clientMsgID).
func idKey(conv charla.ConvID, clientMsgID string) []byte {
	k := convPrefix(make([]byte, 0, 1+2+len(conv)+len(clientMsgID)), kindID, conv)
	return append(k, clientMsgID...)
}

// readKey is the key of user's read cursor in conv.
func readKey(conv charla.ConvID, user string) []byte {
	k := convPrefix(make([]byte, 0, 1+2+len(conv)+len(user)), kindRead, conv)
	return append(k, user...)
}

// prefixEnd returns the smallest key greater than every key that starts with
// p, the exclusive upper bound of a prefix scan.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound (cannot happen: kinds are below 0xff)
}

// seqOf returns the seq of a message key under prefix, or an error when the
// key is not prefix followed by exactly 8 bytes.
func seqOf(prefix, key []byte) (charla.Seq, error) {
	if len(key) != len(prefix)+8 || !bytes.HasPrefix(key, prefix) {
		return 0, fmt.Errorf("malformed message key %x", key)
	}
	return charla.Seq(binary.BigEndian.Uint64(key[len(prefix):])), nil
}

// idValue is the value of a dedup entry: seq ‖ TS (unix µs), both 8 bytes
// big-endian, so that a duplicate is answered without reading its message.
func idValue(seq charla.Seq, ts time.Time) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(seq))
	return binary.BigEndian.AppendUint64(v, uint64(ts.UnixMicro()))
}

// parseIDValue reverses idValue.
func parseIDValue(v []byte) (charla.Seq, time.Time, error) {
	if len(v) != 16 {
		return 0, time.Time{}, fmt.Errorf("malformed dedup entry of %d bytes", len(v))
	}
	return charla.Seq(binary.BigEndian.Uint64(v)), time.UnixMicro(int64(binary.BigEndian.Uint64(v[8:]))).UTC(), nil
}

// recordFormat is the first byte of every message record, so that a later
// layout of the record can be told from this one without a migration.
const recordFormat byte = 1

// encodeRecord validates m and returns its stored form and its TS as stored
// (m.TS in UTC truncated to µs, or now when m has none). The record is
//
//	format (1 byte) ‖ TS (8 bytes, unix µs) ‖ client_msg_id ‖ sender id ‖
//	sender role ‖ body
//
// with every field but the body preceded by its uvarint length; the body
// runs to the end. Conv and Seq are in the key. The body is compacted JSON,
// as bolt stores it; a body that is not JSON makes the message invalid.
func encodeRecord(m charla.Message, now time.Time) ([]byte, time.Time, error) {
	if m.Conv == "" {
		return nil, time.Time{}, fmt.Errorf("%w: message without conv", store.ErrInvalid)
	}
	if m.ClientMsgID == "" {
		return nil, time.Time{}, fmt.Errorf("%w: message without client_msg_id", store.ErrInvalid)
	}
	ts := now
	if !m.TS.IsZero() {
		ts = m.TS.UTC().Truncate(time.Microsecond)
	}
	body := m.Body
	if len(body) == 0 {
		body = json.RawMessage("null") // what json.Marshal (and so bolt) makes of a nil body
	}
	rec := make([]byte, 0, 1+8+3+len(m.ClientMsgID)+len(m.Sender.ID)+len(m.Sender.Role)+len(body))
	rec = append(rec, recordFormat)
	rec = binary.BigEndian.AppendUint64(rec, uint64(ts.UnixMicro()))
	for _, f := range []string{m.ClientMsgID, m.Sender.ID, string(m.Sender.Role)} {
		rec = binary.AppendUvarint(rec, uint64(len(f)))
		rec = append(rec, f...)
	}
	buf := bytes.NewBuffer(rec)
	if err := json.Compact(buf, body); err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: client_msg_id %s: body: %w", store.ErrInvalid, m.ClientMsgID, err)
	}
	return buf.Bytes(), ts, nil
}

// errMalformed is the cause of a record that cannot be decoded.
var errMalformed = errors.New("malformed message record")

// decodeRecord turns a stored record back into the message it was. It copies
// everything out of rec, which pebble owns.
func decodeRecord(conv charla.ConvID, seq charla.Seq, rec []byte) (charla.Message, error) {
	if len(rec) < 9 || rec[0] != recordFormat {
		return charla.Message{}, fmt.Errorf("seq %d: %w (format or length)", seq, errMalformed)
	}
	m := charla.Message{Conv: conv, Seq: seq, TS: time.UnixMicro(int64(binary.BigEndian.Uint64(rec[1:9]))).UTC()}
	rest := rec[9:]
	var fields [3]string
	for i := range fields {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return charla.Message{}, fmt.Errorf("seq %d: %w (field %d)", seq, errMalformed, i)
		}
		fields[i] = string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
	}
	m.ClientMsgID, m.Sender.ID, m.Sender.Role = fields[0], fields[1], charla.Role(fields[2])
	m.Body = bytes.Clone(rest)
	return m, nil
}

// u64 is the 8-byte big-endian form of a seq value.
func u64(seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(seq))
}

// beUint64 reads an 8-byte big-endian value.
func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
