package soapbridge

import (
	"testing"

	"go.uber.org/goleak"
)

// The expirable LRU's cleanup goroutine never exits (see Cache); everything
// else, HTTP connections and simulator handlers included, must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(CacheGoroutine))
}
