package transporttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"charla"
)

// HTTPURL is the http:// URL of path (which may carry a query) for a
// dev-auth user.
func (e *Engine) HTTPURL(path, user string, role charla.Role) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return fmt.Sprintf("http://%s%s%suser=%s&role=%s", e.Addr, path, sep, url.QueryEscape(user), role)
}

// Do sends an HTTP request with a JSON body (nil for none; []byte and
// string as they are, anything else marshalled) and returns the status and
// the body. It fails the test only when the request cannot be made.
func Do(t testing.TB, method, u string, body any, header http.Header) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal request: %v", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp.StatusCode, data
}

// DoJSON is Do that decodes the answer into out (when not nil) and fails
// the test unless the status is want.
func DoJSON(t testing.TB, method, u string, body any, want int, out any) {
	t.Helper()
	status, data := Do(t, method, u, body, nil)
	if status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, u, status, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, u, data, err)
		}
	}
}
