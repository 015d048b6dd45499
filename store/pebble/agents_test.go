package pebble

import (
	"context"
	"testing"

	"charla/auth"
	"charla/auth/authtest"
)

func TestAgentStoreConformance(t *testing.T) {
	authtest.Run(t, func(t *testing.T) auth.AgentStore {
		s, err := Open(context.Background(), t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
