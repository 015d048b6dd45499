package whatsapp_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The Graph client's tests run the fake and HTTP clients: none may leak.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
