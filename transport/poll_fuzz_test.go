package transport

import (
	"testing"

	"charla/wire"
)

// The poll, send and frames decoders never panic, and whatever they refuse
// they refuse with a 4xx (the client's fault, never a 5xx). `make test` runs
// the seeds; `go test -fuzz FuzzDecodePollRequest ./transport/` explores.

func FuzzDecodePollRequest(f *testing.F) {
	for _, seed := range []string{
		`{"cursors":{"c1":3,"cus:2":0},"wait_ms":25000}`,
		`{"session":"abc_1","cursors":{},"wait_ms":0}`,
		`{"cursors":{"c1":-1}}`, `{"cursors":{"bad conv":1}}`, `{"wait_ms":-5}`, `{"wait_ms":1e99}`,
		`{"session":"x/y"}`, `{"cursors":{"c1":18446744073709551615}}`, `null`, `[]`, ``, `{`, "\x00", `{"cursors":[1]}`,
	} {
		f.Add([]byte(seed), "")
	}
	f.Add([]byte(`{"session":"a"}`), "b")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		req, wait, err := decodePollRequest(body, header, 1000)
		if err != nil {
			if s := ProblemStatus(err.Code); s < 400 || s > 499 {
				t.Fatalf("refused with %d (%s)", s, err)
			}
			return
		}
		if wait < 0 || wait > MaxPollWait || len(req.Cursors) > 1000 || len(req.Session) > MaxSessionIDLen {
			t.Fatalf("accepted %+v wait %s", req, wait)
		}
		for conv := range req.Cursors {
			if conv.Validate() != nil {
				t.Fatalf("accepted cursor %q", conv)
			}
		}
	})
}

func FuzzDecodeSendRequest(f *testing.F) {
	for _, seed := range []string{
		`{"conv":"c1","client_msg_id":"0b7e4f0e-6a3c-4b0a-9a59-0d4f3c2e1a00","body":{"text":"hola"}}`,
		`{"type":"send","ref":"r","conv":"c1","client_msg_id":"0b7e4f0e-6a3c-4b0a-9a59-0d4f3c2e1a00","body":{"text":"\u0000"}}`,
		`{"type":"typing","conv":"c1"}`, `{"conv":"c1","client_msg_id":"x","body":{}}`, `{"body":"text"}`,
		`null`, `[]`, ``, `{"conv":1}`, `{"body":{"text":1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := decodeSendRequest(body, 32<<10)
		if err != nil {
			if s := ProblemStatus(err.Code); s < 400 || s > 499 {
				t.Fatalf("refused with %d (%s)", s, err)
			}
			return
		}
		if fr.Type != wire.TypeSend || fr.Conv.Validate() != nil || len(fr.Body) == 0 {
			t.Fatalf("accepted %+v", fr)
		}
	})
}

func FuzzDecodeFramesRequest(f *testing.F) {
	for _, seed := range []string{
		`{"frames":[{"type":"typing","conv":"c1","state":"on"},{"type":"ping","t":1}]}`,
		`{"frames":[{"type":"subscribe","conv":"c1"}]}`, `{"frames":[]}`, `{"frames":[1]}`, `{"frames":[{}]}`,
		`{"session":"s","frames":[{"type":"read","conv":"c1","seq":2}]}`, `null`, ``, `{"frames":{}}`,
	} {
		f.Add([]byte(seed), "")
	}
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		_, frames, err := decodeFramesRequest(body, header)
		if err != nil {
			if s := ProblemStatus(err.Code); s < 400 || s > 499 {
				t.Fatalf("refused with %d (%s)", s, err)
			}
			return
		}
		if len(frames) == 0 || len(frames) > MaxFramesPerRequest {
			t.Fatalf("accepted %d frames", len(frames))
		}
		for _, fr := range frames {
			if fr.Type == "" || fr.Type == wire.TypeSubscribe || fr.Type == wire.TypeUnsubscribe {
				t.Fatalf("accepted %+v", fr)
			}
		}
	})
}
