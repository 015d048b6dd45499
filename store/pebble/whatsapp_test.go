package pebble

import (
	"testing"

	"charla/store/storetest"
)

func TestWhatsAppConformance(t *testing.T) {
	storetest.WhatsApp(t, func(t *testing.T) storetest.WhatsAppStore {
		s := open(t, t.TempDir())
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
