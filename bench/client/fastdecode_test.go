package client

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"charla"
	"charla/wire"
)

// hotFields are the fields the fast path decodes, with wire.Frame's JSON
// names: on them it must agree with encoding/json exactly. (Fields it
// skips, sender and ts, are not checked by the fast path.)
type hotFields struct {
	Type        string          `json:"type"`
	Ref         string          `json:"ref,omitempty"`
	Conv        charla.ConvID   `json:"conv,omitempty"`
	Seq         charla.Seq      `json:"seq,omitempty"`
	ClientMsgID string          `json:"client_msg_id,omitempty"`
	Body        json.RawMessage `json:"body,omitempty"`
	Duplicate   bool            `json:"duplicate,omitempty"`
}

func hot(f wire.Frame) hotFields {
	return hotFields{Type: f.Type, Ref: f.Ref, Conv: f.Conv, Seq: f.Seq, ClientMsgID: f.ClientMsgID, Body: f.Body, Duplicate: f.Duplicate}
}

func checkAgrees(t *testing.T, b []byte) {
	t.Helper()
	var fast wire.Frame
	ok := decodeHot(b, &fast)
	var slow hotFields
	err := json.Unmarshal(b, &slow)
	if !ok {
		return // the fallback decodes it: always allowed
	}
	if err != nil {
		t.Fatalf("fast path accepted what encoding/json rejects %q: %v", b, err)
	}
	if !reflect.DeepEqual(hot(fast), slow) {
		t.Fatalf("fast path disagrees on %q:\nfast %+v\nslow %+v", b, hot(fast), slow)
	}
}

func TestDecodeHotAgreesWithEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	msg := wire.Encode(wire.Msg{Type: wire.TypeMsg, Message: charla.Message{Conv: "c-1", Seq: 42, ClientMsgID: "0b3c9a8e-8d1b-4c33-9d51-3f3b1b6a0f10",
		Sender: charla.Sender{ID: "u", Role: charla.RoleAgent}, Body: json.RawMessage(`{"text":"charla-bench t=123 xx","n":{"a":[1,"}"]}}`), TS: ts}})
	ack := wire.Encode(wire.Ack{Type: wire.TypeAck, Ref: "r1", Conv: "c-1", ClientMsgID: "id", Seq: 7, TS: ts, Duplicate: true})
	var f wire.Frame
	if !decodeHot(msg, &f) || f.Seq != 42 || f.Conv != "c-1" || string(f.Body) != `{"text":"charla-bench t=123 xx","n":{"a":[1,"}"]}}` {
		t.Fatalf("msg not decoded by the fast path: %+v", f)
	}
	f = wire.Frame{}
	if !decodeHot(ack, &f) || !f.Duplicate || f.Seq != 7 || f.Ref != "r1" {
		t.Fatalf("ack not decoded by the fast path: %+v", f)
	}
	for _, b := range [][]byte{
		msg, ack,
		[]byte(`{"type":"msg","conv":"a\"b","seq":1}`), // escape: fallback
		[]byte(`{"type":"msg","seq":1,"seq":2}`),       // last wins in both
		[]byte(`{"type":"msg","seq":-1}`),              // fallback
		[]byte(`{"type":"msg","seq":1.5}`),             // fallback
		[]byte(`{"type":"msg","body":{"text":"x"},"extra":[1,{"y":"}"}]}`),
		[]byte(`{"type":"msg","body":{"text":"x"`),            // truncated
		[]byte(`{"type":"msg","body":{"text":"x"}} trailing`), // trailing junk
		[]byte(`{"type":"msg","type":"ack"}`),                 // fallback
		[]byte(`{"type":"ack","duplicate":tru}`),              // invalid
		[]byte(`{"type":"msg" , "seq" : 3 , "conv" : "z" }`),
		[]byte(`{"type":"pong","t":1}`),                 // not hot
		[]byte(`{"type":"msg","body":"not an object"}`), // fallback
		[]byte(`{"type":"msg","sender":{"id":"\u0041","role":"agent"}}`),
	} {
		checkAgrees(t, b)
	}
}

func FuzzDecodeHot(f *testing.F) {
	f.Add([]byte(`{"type":"msg","conv":"c","seq":1,"client_msg_id":"x","body":{"text":"t"},"ts":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"type":"ack","ref":"r","conv":"c","client_msg_id":"x","seq":9,"duplicate":true}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkAgrees(t, b) })
}
