package transport

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"charla"
)

func TestWriteProblem(t *testing.T) {
	tests := []struct {
		code   charla.Code
		status int
	}{
		{charla.CodeBadRequest, 400},
		{charla.CodeUnauthorized, 401},
		{charla.CodeForbidden, 403},
		{charla.CodeNotFound, 404},
		{charla.CodeTooLarge, 413},
		{charla.CodeRateLimited, 429},
		{charla.CodeInternal, 500},
		{charla.CodeUnavailable, 503},
		{"something new", 500},
	}
	for _, tt := range tests {
		t.Run(string(tt.code), func(t *testing.T) {
			w := httptest.NewRecorder()
			writeProblem(w, charla.Errorf(tt.code, "because %d", 42))
			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if w.Code != tt.status || p.Error.Code != tt.code || p.Error.Message != "because 42" || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tt.status)
			}
		})
	}
	t.Run("retry hint", func(t *testing.T) {
		w := httptest.NewRecorder()
		writeProblemRetry(w, charla.Errorf(charla.CodeRateLimited, "slow down"), 1500)
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" {
			t.Fatalf("%d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
		}
		var p Problem
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Error.RetryAfterMS != 1500 {
			t.Fatalf("body %s", w.Body)
		}
	})
}
