package rlimit

import (
	"strings"
	"testing"
)

func TestEnsureSmallNeedSucceeds(t *testing.T) {
	l, err := Ensure(Need(10))
	if err != nil {
		t.Fatal(err)
	}
	if l.Soft != l.Hard || MaxConns(l) < 10 {
		t.Fatalf("limit %+v", l)
	}
}

func TestEnsureHugeNeedExplains(t *testing.T) {
	_, err := Ensure(1 << 40) // beyond any nr_open
	if err == nil {
		t.Fatal("no error for an impossible limit")
	}
	if !strings.Contains(err.Error(), "lower --conns") {
		t.Fatalf("error does not say what to do: %v", err)
	}
}
