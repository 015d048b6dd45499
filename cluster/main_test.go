package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must stop what it started: the managers, the watchers and the
// NATS connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
