package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The SOAP simulator refuses a bad configuration listing every problem at
// once, before it listens (fakegraph's: TestWhatsAppSettingsProblems).
func TestSoapsimListsEveryProblem(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := soapsimCmd(context.Background(), []string{"--addr", "nowhere", "--log-format", "xml"}, &stdout, &stderr, func(string) string { return "" })
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
	}
	for _, w := range []string{`addr "nowhere"`, `log-format "xml"`} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr does not list %q:\n%s", w, stderr.String())
		}
	}
}
