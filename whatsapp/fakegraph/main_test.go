package fakegraph_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The fake posts webhooks from goroutines of its own: Close must end them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
