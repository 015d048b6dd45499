package wire

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"charla"
)

func TestSplit(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{`{"a":1}`, []string{`{"a":1}`}},
		{"{\"a\":1}\n{\"b\":2}", []string{`{"a":1}`, `{"b":2}`}},
		{"{\"a\":1}\n\n{\"b\":2}\n", []string{`{"a":1}`, `{"b":2}`}},
		{"", nil},
	}
	for _, tc := range cases {
		got := Split([]byte(tc.in))
		if len(got) != len(tc.want) {
			t.Fatalf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for i := range got {
			if string(got[i]) != tc.want[i] {
				t.Fatalf("Split(%q)[%d] = %q, want %q", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

// A server frame round-trips through Encode, Split and Decode with
// every field a client relies on.
func TestMsgRoundTrip(t *testing.T) {
	m := charla.Message{Conv: "c", Seq: 7, ClientMsgID: "0b8e4c1e-3f5a-4e8b-9d1c-2a3b4c5d6e7f",
		Sender: charla.Sender{ID: "ana", Role: charla.RoleAgent}, Body: json.RawMessage(`{"text":"línea\nnueva"}`),
		TS: time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC)}
	batch := bytes.Join([][]byte{Encode(Msg{Type: TypeMsg, Message: m}), Encode(Ack{Type: TypeAck, Conv: "c", Seq: 7})}, []byte{'\n'})
	objs := Split(batch)
	if len(objs) != 2 {
		t.Fatalf("a newline inside a value split the batch: %q", objs)
	}
	f, err := Decode(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeMsg || f.Seq != 7 || f.Sender.ID != "ana" || !f.TS.Equal(m.TS) || f.ClientMsgID != m.ClientMsgID {
		t.Fatalf("decoded %+v", f)
	}
	var body struct{ Text string }
	if err := json.Unmarshal(f.Body, &body); err != nil || body.Text != "línea\nnueva" {
		t.Fatalf("body %s: %v", f.Body, err)
	}
	// subscribed must carry head and since even when they are 0
	if got := string(Encode(Subscribed{Type: TypeSubscribed, Conv: "c"})); got != `{"type":"subscribed","conv":"c","head":0,"since":0}` {
		t.Fatalf("subscribed = %s", got)
	}
}

// FuzzDecode: any input gives a frame or a bad_request, never a panic;
// what decodes re-encodes to something that decodes the same way.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"type":"send","conv":"c","client_msg_id":"x","body":{"text":"hi"},"ref":"1"}`,
		`{"type":"ping","t":123}`, `{"type":"subscribe","since":5}`, `[]`, `{`, `{"type":1}`, `{"since":-1}`, "\x00", `{"t":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			if e := charla.AsError(err); e.Code != charla.CodeBadRequest || e.Message == "" {
				t.Fatalf("error %+v for %q", err, data)
			}
			return
		}
		if fr.Type == "" {
			t.Fatalf("decoded a frame without type from %q", data)
		}
		again, err := Decode(Encode(fr))
		if err != nil || again.Type != fr.Type || again.Conv != fr.Conv || again.Seq != fr.Seq || again.Since != fr.Since || again.Ref != fr.Ref {
			t.Fatalf("re-decode of %q: %+v (%v), want %+v", data, again, err, fr)
		}
	})
}
