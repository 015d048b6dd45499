package postgres

import (
	"testing"

	"charla/store/storetest"
)

func TestWhatsAppConformance(t *testing.T) {
	needDB(t)
	storetest.WhatsApp(t, func(t *testing.T) storetest.WhatsAppStore { return openTest(t) })
}
