package postgres

import (
	"testing"

	"charla/auth"
	"charla/auth/authtest"
)

func TestAgentStoreConformance(t *testing.T) {
	needDB(t)
	authtest.Run(t, func(t *testing.T) auth.AgentStore { return openTest(t) })
}
