package transport_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/media"
	"charla/transport"
	"charla/transport/transporttest"
)

// pngBytes is a small real PNG.
func pngBytes(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.RGBA{R: 255, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func token(t *testing.T, user string, role charla.Role) string {
	tok, err := transport.MintToken(transporttest.Secret, user, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// An image uploaded raw or as multipart comes back byte for byte, to those
// who may use its conversation only.
func TestMediaRoundTripAndAuthorization(t *testing.T) {
	e, _ := transporttest.StartLogin(t, nil)
	img := pngBytes(t)
	alice, bob, agent := token(t, "alice", charla.RoleCustomer), token(t, "bob", charla.RoleCustomer), token(t, "ag", charla.RoleAgent)

	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	part, _ := w.CreatePart(textproto.MIMEHeader{"Content-Disposition": {`form-data; name="file"; filename="a.png"`}, "Content-Type": {"image/png"}})
	part.Write(img)
	w.Close()

	for _, up := range []struct {
		name, ctype string
		body        []byte
	}{
		{"raw", "image/png", img},
		{"multipart", w.FormDataContentType(), mp.Bytes()},
	} {
		t.Run(up.name, func(t *testing.T) {
			resp, body := e.Do(t, "POST", "/v1/media?conv=alice:photos", alice, up.body, "Content-Type", up.ctype)
			var m media.Meta
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &m) != nil || m.Type != "image/png" || m.Size != int64(len(img)) || m.Uploader != "alice" {
				t.Fatalf("upload = %d %s", resp.StatusCode, body)
			}
			for _, g := range []struct {
				name, tok string
				status    int
			}{
				{"owner", alice, http.StatusOK},
				{"agent", agent, http.StatusOK},
				{"another customer", bob, http.StatusForbidden},
				{"anonymous", "", http.StatusUnauthorized},
			} {
				resp, body := e.Do(t, "GET", "/v1/media/"+m.ID, g.tok, nil)
				if resp.StatusCode != g.status {
					t.Fatalf("GET by %s = %d %s, want %d", g.name, resp.StatusCode, body, g.status)
				}
				if g.status == http.StatusOK && (!bytes.Equal(body, img) || resp.Header.Get("Content-Type") != "image/png" || resp.Header.Get("X-Content-Type-Options") != "nosniff") {
					t.Fatalf("GET by %s: %d bytes, headers %v", g.name, len(body), resp.Header)
				}
			}
		})
	}
	if resp, body := e.Do(t, "GET", "/v1/media/0123456789abcdef0123456789abcdef", agent, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown id = %d %s", resp.StatusCode, body)
	}
	if resp, body := e.Do(t, "POST", "/v1/media?conv=bob", alice, img, "Content-Type", "image/png"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upload into another's conversation = %d %s", resp.StatusCode, body)
	}
}

// The bytes decide: a declared type they do not match, or a type off the
// allow-list, is 415; sizes over the type's limit are 413.
func TestMediaRefusals(t *testing.T) {
	e, _ := transporttest.StartLogin(t, nil)
	tok := token(t, "ag", charla.RoleAgent)
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		status      int
	}{
		{"text claiming to be a png", "image/png", []byte("#!/bin/sh\nrm -rf /\n"), http.StatusUnsupportedMediaType},
		{"html claiming to be a pdf", "application/pdf", []byte("<html><script>alert(1)</script></html>"), http.StatusUnsupportedMediaType},
		{"a type off the list", "application/x-sh", []byte("#!/bin/sh\n"), http.StatusUnsupportedMediaType},
		{"a png over 16 MiB, chunked", "image/png", append(pngBytes(t), make([]byte, media.MaxImageBytes)...), http.StatusRequestEntityTooLarge},
		{"empty", "image/png", []byte{}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An io.Reader body has no Content-Length: the server must
			// stop reading by itself.
			resp, body := e.Do(t, "POST", "/v1/media?conv=c1", tok, bufio.NewReader(bytes.NewReader(tc.body)), "Content-Type", tc.ctype)
			problemCode(t, resp, body, tc.status)
		})
	}
}

// A Content-Length over the limit is refused before the body is read: the
// answer arrives while the client has sent 1 KiB of a 200 MiB body.
func TestMediaOversizeRefusedBeforeReading(t *testing.T) {
	e, _ := transporttest.StartLogin(t, nil)
	conn, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/media?conv=c1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n",
		token(t, "ag", charla.RoleAgent), 200<<20)
	conn.Write(pngBytes(t))
	conn.Write(make([]byte, 1024))
	conn.SetReadDeadline(time.Now().Add(transporttest.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var p struct{ Error struct{ Code string } }
	if json.NewDecoder(resp.Body).Decode(&p) != nil || !strings.Contains(p.Error.Code, "too_large") {
		t.Fatalf("body: %+v", p)
	}
}
