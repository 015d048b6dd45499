package pebble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/store/bolt"
)

// importConvs are the conversations of the bolt store the import tests
// build: IDs that are prefixes of each other, the longest allowed one, one
// with more messages than an import page, and one with read cursors only.
var importConvs = []struct {
	conv    charla.ConvID
	n       int
	cursors map[string]charla.Seq
}{
	{"a", 5, map[string]charla.Seq{"alice": 3, "bob": 5}},
	{"a:1", 3, nil},
	{"long", importPage*2 + 7, map[string]charla.Seq{"agent-7": importPage + 1}},
	{charla.ConvID(strings.Repeat("z", charla.MaxConvIDLen)), 2, nil},
	{"wa:+34600111222", 1, map[string]charla.Seq{"34600111222": 1}},
	{"cursors-only", 0, map[string]charla.Seq{"carol": 9}},
}

// importMsg is message i of conv in the bolt store: senders, bodies and
// timestamps differ from message to message so that the copy is checked
// field by field.
func importMsg(conv charla.ConvID, i int) charla.Message {
	roles := []charla.Role{charla.RoleCustomer, charla.RoleAgent, charla.RoleAdmin}
	body, _ := json.Marshal(map[string]any{"text": fmt.Sprintf("¡hola! <%s> #%d", conv, i), "n": i})
	return charla.Message{
		Conv:        conv,
		ClientMsgID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, len(conv)),
		Sender:      charla.Sender{ID: fmt.Sprintf("user-%d", i%3), Role: roles[i%3]},
		Body:        body,
		TS:          time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * 1234567 * time.Nanosecond),
	}
}

// boltSource builds the bolt store of the import tests.
func boltSource(t *testing.T) *bolt.Store {
	t.Helper()
	src, err := bolt.Open(filepath.Join(t.TempDir(), "data", "charla.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	ctx := t.Context()
	for _, c := range importConvs {
		for i := 0; i < c.n; i += 300 {
			var batch []charla.Message
			for j := i; j < min(c.n, i+300); j++ {
				batch = append(batch, importMsg(c.conv, j))
			}
			if _, err := src.Append(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		for user, seq := range c.cursors {
			if err := src.SetReadCursor(ctx, c.conv, user, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	return src
}

// totalImportMsgs is how many messages boltSource holds.
func totalImportMsgs() int {
	n := 0
	for _, c := range importConvs {
		n += c.n
	}
	return n
}

// checkImported fails unless dst holds exactly what src does: every message
// field by field, heads, cursors, and the dedup entries of every client id.
func checkImported(t *testing.T, src *bolt.Store, dst *Store) {
	t.Helper()
	ctx := t.Context()
	for _, c := range importConvs {
		want, err := src.Range(ctx, c.conv, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dst.Range(ctx, c.conv, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages imported, want %d", c.conv, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			var gb, wb any
			_ = json.Unmarshal(g.Body, &gb)
			_ = json.Unmarshal(w.Body, &wb)
			if g.Conv != w.Conv || g.Seq != w.Seq || g.ClientMsgID != w.ClientMsgID || g.Sender != w.Sender ||
				!g.TS.Equal(w.TS) || g.TS.Location() != time.UTC || !reflect.DeepEqual(gb, wb) {
				t.Fatalf("%s: message %d imported as %+v, want %+v", c.conv, i, g, w)
			}
		}
		if h, err := dst.Head(ctx, c.conv); err != nil || h != charla.Seq(c.n) {
			t.Errorf("%s: Head = %d, %v; want %d", c.conv, h, err, c.n)
		}
		cur, err := dst.ReadCursors(ctx, c.conv)
		if err != nil {
			t.Fatal(err)
		}
		if wantCur := c.cursors; !maps.Equal(cur, wantCur) && (len(cur) != 0 || len(wantCur) != 0) {
			t.Errorf("%s: cursors %v, want %v", c.conv, cur, wantCur)
		}
		if len(want) == 0 {
			continue
		}
		// Every client id is known: a resend is a duplicate with the
		// original seq and TS; and a new message continues at head+1.
		resend := append(append([]charla.Message{}, want...), charla.Message{Conv: c.conv, ClientMsgID: "new-after-import", Body: []byte(`{}`)})
		res, err := dst.Append(ctx, resend)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res[:len(want)] {
			if !r.Duplicate || r.Seq != want[i].Seq || !r.TS.Equal(want[i].TS) {
				t.Fatalf("%s: resend of imported seq %d: %+v, want a duplicate with its seq and TS", c.conv, want[i].Seq, r)
			}
		}
		if last := res[len(want)]; last.Duplicate || last.Seq != charla.Seq(c.n+1) {
			t.Errorf("%s: first new message after import: %+v, want seq %d", c.conv, last, c.n+1)
		}
	}
}

func TestImportBolt(t *testing.T) {
	src := boltSource(t)
	dst := open(t, filepath.Join(t.TempDir(), "charla.pebble"))
	defer dst.Close()
	var reports []ImportProgress
	stats, err := ImportBolt(t.Context(), src, dst, func(p ImportProgress) { reports = append(reports, p) })
	if err != nil {
		t.Fatalf("ImportBolt: %v", err)
	}
	want := ImportStats{Conversations: len(importConvs), Messages: totalImportMsgs(), Cursors: 5}
	if stats != want {
		t.Errorf("stats %+v, want %+v", stats, want)
	}
	if len(reports) != len(importConvs) {
		t.Fatalf("%d progress reports, want one per conversation (%d)", len(reports), len(importConvs))
	}
	for i, p := range reports {
		if p.Done != i+1 || p.Total != len(importConvs) {
			t.Errorf("report %d: done %d of %d", i, p.Done, p.Total)
		}
	}
	if last := reports[len(reports)-1]; last.ImportStats != want {
		t.Errorf("last report's totals %+v, want %+v", last.ImportStats, want)
	}

	// A second run finds everything present and writes nothing.
	again, err := ImportBolt(t.Context(), src, dst, nil)
	if err != nil {
		t.Fatalf("second ImportBolt: %v", err)
	}
	if wantAgain := (ImportStats{Conversations: len(importConvs), Present: totalImportMsgs()}); again != wantAgain {
		t.Errorf("second run stats %+v, want %+v", again, wantAgain)
	}

	// And what was imported survives a reopen.
	dir := dst.Dir()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = open(t, dir)
	defer dst.Close()
	checkImported(t, src, dst)
}

// TestImportBoltResumes interrupts the import at various points, as a crash
// would, and runs it again: the result must be the same as one clean run.
func TestImportBoltResumes(t *testing.T) {
	src := boltSource(t)
	tests := []struct {
		name string
		// interrupt leaves dst as an interrupted import would.
		interrupt func(t *testing.T, dst *Store)
	}{
		{"CanceledAfterTwoConversations", func(t *testing.T, dst *Store) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, err := ImportBolt(ctx, src, dst, func(p ImportProgress) {
				if p.Done == 2 {
					cancel()
				}
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled import: %v, want context.Canceled", err)
			}
		}},
		{"CanceledInsideLongConversation", func(t *testing.T, dst *Store) {
			// The state a crash between two pages of "long" leaves: a
			// prefix of it, written with its original seqs and TS.
			var batch []charla.Message
			for i := range importPage + 10 {
				batch = append(batch, importMsg("long", i))
			}
			if _, err := dst.Append(t.Context(), batch); err != nil {
				t.Fatal(err)
			}
		}},
		{"CursorsAheadAlready", func(t *testing.T, dst *Store) {
			// A cursor already beyond bolt's must not move back.
			if err := dst.SetReadCursor(t.Context(), "a", "alice", 3); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := open(t, filepath.Join(t.TempDir(), "charla.pebble"))
			defer dst.Close()
			tt.interrupt(t, dst)
			before := 0
			for _, c := range importConvs {
				h, err := dst.Head(t.Context(), c.conv)
				if err != nil {
					t.Fatal(err)
				}
				before += int(h)
			}
			stats, err := ImportBolt(t.Context(), src, dst, nil)
			if err != nil {
				t.Fatalf("resumed ImportBolt: %v", err)
			}
			if stats.Present != before || stats.Messages != totalImportMsgs()-before {
				t.Errorf("resumed run: %+v, want %d present and %d written", stats, before, totalImportMsgs()-before)
			}
			checkImported(t, src, dst)
		})
	}
}

// TestImportBoltDiverged pins that a store written by something else than
// the import is refused rather than merged.
func TestImportBoltDiverged(t *testing.T) {
	src := boltSource(t)
	tests := []struct {
		name string
		msgs []charla.Message
	}{
		{"OtherMessageAtSameSeq", []charla.Message{{Conv: "a", ClientMsgID: "written-by-serve", Body: []byte(`{}`)}}},
		{"MoreMessages", func() []charla.Message {
			var out []charla.Message
			for i := range 6 { // bolt has 5 in "a"
				out = append(out, importMsg("a", i))
			}
			return out
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := open(t, t.TempDir())
			defer dst.Close()
			if _, err := dst.Append(t.Context(), tt.msgs); err != nil {
				t.Fatal(err)
			}
			if _, err := ImportBolt(t.Context(), src, dst, nil); !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "import a:") {
				t.Errorf("ImportBolt into a diverged store: %v, want ErrDiverged naming conversation a", err)
			}
		})
	}
}
