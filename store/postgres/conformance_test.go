package postgres

import (
	"testing"

	"charla/store"
	"charla/store/storetest"
)

// conformance runs the shared suite with every store on a fresh schema,
// reopened from the same URL.
func conformance(t *testing.T, params ...string) {
	needDB(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			o := testOptions(schemaURL(t, params...))
			s, err := Open(t.Context(), o, testLogger(t))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			s, err := Open(t.Context(), old.(*Store).opts, testLogger(t))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return s
		},
	})
}

// TestConformance uses pgx's default mode: prepared, cached statements.
func TestConformance(t *testing.T) { conformance(t) }

// TestConformanceSimpleProtocol is the mode for Supabase's transaction
// pooler: no prepared statements, arguments interpolated by pgx.
func TestConformanceSimpleProtocol(t *testing.T) {
	conformance(t, "default_query_exec_mode", "simple_protocol")
}

func TestWorkflow(t *testing.T) {
	needDB(t)
	storetest.RunWorkflow(t, func(t *testing.T) storetest.WorkflowStore {
		s, err := Open(t.Context(), testOptions(schemaURL(t)), testLogger(t))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
