package contract

import (
	"testing"

	"github.com/rs/zerolog"
)

// transporttestLog routes a store's warnings to the test's log.
func transporttestLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}
