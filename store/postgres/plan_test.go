package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPlansUseIndexes guards the hot statements against plans that scan
// messages whole. It prepares each on an empty table, where a scan is
// cheapest, and forces the generic plan, the one pgx's statement cache
// ends up reusing for the life of a connection: a scan there would run on
// every call as the table grows (it happened: Append went from 5 ms to 45 ms
// per 100 messages over 200k rows).
func TestPlansUseIndexes(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	msgs := benchMsgs(3, 0)
	for i := range msgs {
		msgs[i].Seq = 1
	}
	a, err := makeAppendArgs(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, params, sql string
		args              []any
	}{
		{"Append", "text[], text[], text[], text[], text[], timestamptz[]", appendSQL,
			[]any{a.conv, a.cmid, a.senderID, a.senderRole, a.body, a.ts}},
		{"AppendSequenced", "text[], bigint[], text[], text[], text[], text[], timestamptz[]", appendSequencedSQL,
			[]any{a.conv, a.seq, a.cmid, a.senderID, a.senderRole, a.body, a.ts}},
		{"AppendFenced", "text[], text[], text[], text[], text[], timestamptz[], int[], bigint[]", appendFencedSQL,
			[]any{a.conv, a.cmid, a.senderID, a.senderRole, a.body, a.ts, []int32{1}, []int64{1}}},
		{"AppendSequencedFenced", "text[], bigint[], text[], text[], text[], text[], timestamptz[], int[], bigint[]", appendSequencedFencedSQL,
			[]any{a.conv, a.seq, a.cmid, a.senderID, a.senderRole, a.body, a.ts, []int32{1}, []int64{1}}},
		{"StoredConflicts", "text[], bigint[], text[]", storedConflictsSQL,
			[]any{a.conv, a.seq, a.cmid}},
		{"Range", "text, bigint, int", rangeSQL, []any{"c", int64(0), 50}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = tx.Rollback(ctx)
				_, _ = s.pool.Exec(ctx, "DEALLOCATE ALL")
			}()
			if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "PREPARE plan_"+tc.name+"("+tc.params+") AS "+tc.sql); err != nil {
				t.Fatal(err)
			}
			ph := make([]string, len(tc.args))
			for i := range ph {
				ph[i] = "$" + string(rune('1'+i))
			}
			args := append([]any{pgx.QueryExecModeSimpleProtocol}, tc.args...)
			rows, err := tx.Query(ctx, "EXPLAIN EXECUTE plan_"+tc.name+"("+strings.Join(ph, ", ")+")", args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			var line string
			_, err = pgx.ForEachRow(rows, []any{&line}, func() error { plan = append(plan, line); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan on messages") {
				t.Errorf("generic plan scans messages:\n%s", p)
			}
		})
	}
}
