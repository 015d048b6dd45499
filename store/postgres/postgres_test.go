package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"charla"
	"charla/store"
)

func tmsg(conv charla.ConvID, id, text string) charla.Message {
	body, _ := json.Marshal(map[string]string{"text": text})
	return charla.Message{
		Conv:        conv,
		ClientMsgID: id,
		Sender:      charla.Sender{ID: "u1", Role: charla.RoleCustomer},
		Body:        body,
	}
}

func mustAppend(t *testing.T, s *Store, msgs ...charla.Message) []store.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return res
}

// poolFor opens a plain pool on url (the store's schema), for the test's own
// inspection and sabotage.
func poolFor(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestOptionsValidate(t *testing.T) {
	o := DefaultOptions()
	o.URL = "postgres://u@localhost/db"
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults with a URL: %v", err)
	}
	bad := Options{
		URL:                   "postgres://u@localhost:notaport/db",
		MaxConns:              0,
		MinConns:              -1,
		QueryTimeout:          0,
		ConnectTimeout:        -time.Second,
		RetryAttempts:         3,
		RetryBaseDelay:        0,
		RetryMaxDelay:         -1,
		HealthCheckPeriod:     0,
		MaxConnLifetime:       0,
		MaxConnLifetimeJitter: -1,
		MaxConnIdleTime:       0,
		KeepAlive:             0,
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted nonsense")
	}
	want := []string{"URL", "MaxConns", "MinConns", "QueryTimeout", "ConnectTimeout", "RetryBaseDelay",
		"RetryMaxDelay", "HealthCheckPeriod", "MaxConnLifetime", "MaxConnLifetimeJitter", "MaxConnIdleTime", "KeepAlive"}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var se *SettingError
		if !errors.As(e, &se) {
			t.Errorf("%v is not a *SettingError", e)
			continue
		}
		got = append(got, se.Setting)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("settings reported:\n got %v\nwant %v", got, want)
	}
	o = DefaultOptions()
	o.URL = "postgres://u@localhost/db"
	o.MinConns = 60
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "MinConns") {
		t.Errorf("MinConns > MaxConns: %v", err)
	}
	o = DefaultOptions()
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "URL") {
		t.Errorf("no URL: %v", err)
	}
}

func TestOpenRejectsInvalidOptions(t *testing.T) {
	_, err := Open(t.Context(), Options{}, testLogger(t))
	var se *SettingError
	if !errors.As(err, &se) {
		t.Fatalf("Open(Options{}) = %v, want a *SettingError", err)
	}
}

func TestMigrate(t *testing.T) {
	needDB(t)
	ctx := t.Context()
	latest := LatestVersion()
	if latest < 1 {
		t.Fatalf("LatestVersion = %d", latest)
	}
	// Every embedded version, in order: branches number their migrations
	// ahead of merging, so the list may have gaps until they all land.
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, 0, len(ms))
	for _, m := range ms {
		all = append(all, m.version)
	}

	t.Run("FromEmptyThenAgain", func(t *testing.T) {
		url := schemaURL(t)
		applied, err := MigrateURL(ctx, url)
		if err != nil {
			t.Fatalf("first Migrate: %v", err)
		}
		if fmt.Sprint(applied) != fmt.Sprint(all) {
			t.Errorf("first Migrate applied %v, want %v", applied, all)
		}
		applied, err = MigrateURL(ctx, url)
		if err != nil || len(applied) != 0 {
			t.Errorf("second Migrate = %v, %v; want nothing applied", applied, err)
		}
		p := poolFor(t, url)
		for _, table := range []string{"conversations", "messages", "read_cursors", "chatbot_sessions", "outbox"} {
			var n int
			if err := p.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
				t.Errorf("table %s: %v", table, err)
			}
		}
		// The status CHECK is part of the schema.
		_, err = p.Exec(ctx, `INSERT INTO conversations (id, status) VALUES ('x', 'closed')`)
		if err == nil || !strings.Contains(err.Error(), "conversations_status_check") {
			t.Errorf("status 'closed' accepted: %v", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		url := schemaURL(t)
		pools := []*pgxpool.Pool{poolFor(t, url), poolFor(t, url)}
		var wg sync.WaitGroup
		results := make([][]int, len(pools))
		errs := make([]error, len(pools))
		start := make(chan struct{})
		for i, p := range pools {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = Migrate(ctx, p)
			}()
		}
		close(start)
		wg.Wait()
		var union []int
		for i := range pools {
			if errs[i] != nil {
				t.Errorf("migrator %d: %v", i, errs[i])
			}
			union = append(union, results[i]...)
		}
		if len(union) != len(all) {
			t.Errorf("migrators applied %v and %v; want %v applied exactly once in all", results[0], results[1], all)
		}
		var rows int
		if err := pools[0].QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil || rows != len(all) {
			t.Errorf("schema_migrations has %d rows (%v), want %d", rows, err, len(all))
		}
	})

	t.Run("EditedMigrationRefused", func(t *testing.T) {
		url := schemaURL(t)
		if _, err := MigrateURL(ctx, url); err != nil {
			t.Fatal(err)
		}
		p := poolFor(t, url)
		if _, err := p.Exec(ctx, `UPDATE schema_migrations SET checksum = 'x' WHERE version = 1`); err != nil {
			t.Fatal(err)
		}
		if _, err := MigrateURL(ctx, url); err == nil || !strings.Contains(err.Error(), "edited") {
			t.Errorf("Migrate over an edited migration = %v, want a refusal", err)
		}
	})

	t.Run("OpenChecksSchema", func(t *testing.T) {
		o := testOptions(schemaURL(t))
		o.AutoMigrate = false
		_, err := Open(ctx, o, testLogger(t))
		if !errors.Is(err, ErrSchemaOutdated) {
			t.Fatalf("Open on an empty schema = %v, want ErrSchemaOutdated", err)
		}
		if _, err := MigrateURL(ctx, o.URL); err != nil {
			t.Fatal(err)
		}
		openOpts(t, o)
	})
}

func TestAppendGroupCommit(t *testing.T) {
	s := openTest(t)
	// Three conversations interleaved in one call, one of them with a
	// duplicate of a message of the same call.
	var msgs []charla.Message
	for i := range 9 {
		conv := charla.ConvID(fmt.Sprintf("c%d", i%3))
		msgs = append(msgs, tmsg(conv, fmt.Sprintf("id-%d", i), "hi"))
	}
	msgs = append(msgs, tmsg("c1", "id-1", "again"))
	before := s.Stats().Ops["append"]
	res := mustAppend(t, s, msgs...)
	after := s.Stats().Ops["append"]
	if d := after.Attempts - before.Attempts; d != 1 {
		t.Errorf("group commit took %d attempts, want 1", d)
	}
	for i := range 9 {
		want := charla.Seq(i/3 + 1)
		if res[i].Seq != want || res[i].Duplicate {
			t.Errorf("msg %d: %+v, want seq %d new", i, res[i], want)
		}
	}
	if last := res[9]; !last.Duplicate || last.Seq != res[1].Seq || !last.TS.Equal(res[1].TS) {
		t.Errorf("in-call duplicate: %+v, want a duplicate of %+v", last, res[1])
	}
	for _, c := range []charla.ConvID{"c0", "c1", "c2"} {
		if h, err := s.Head(t.Context(), c); err != nil || h != 3 {
			t.Errorf("Head(%s) = %d, %v; want 3", c, h, err)
		}
	}
	st := s.Stats()
	if st.AppendedMessages != 9 || st.DuplicateMessages != 1 {
		t.Errorf("stats count %d appended, %d duplicates; want 9, 1", st.AppendedMessages, st.DuplicateMessages)
	}
}

func TestAppendInvalidNotRetried(t *testing.T) {
	s := openTest(t)
	cases := []struct {
		name string
		msg  charla.Message
		code string
	}{
		{"BodyNotJSON", charla.Message{Conv: "c", ClientMsgID: "a", Body: json.RawMessage(`{"text": "unterminated`)}, "22P02"},
		{"NULInText", charla.Message{Conv: "c", ClientMsgID: "b", Sender: charla.Sender{ID: "x\x00y"}, Body: json.RawMessage(`{}`)}, "22021"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Ops["append"]
			_, err := s.Append(t.Context(), []charla.Message{tmsg("c", "ok-"+tc.name, "fine"), tc.msg})
			after := s.Stats().Ops["append"]
			if !errors.Is(err, store.ErrInvalid) || IsRetryable(err) || IsUnavailable(err) {
				t.Fatalf("Append = %v; want ErrInvalid, not retryable, not unavailable", err)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tc.code || e.Op != "append" || e.Attempts != 1 {
				t.Errorf("error = %#v, want code %s, op append, 1 attempt", e, tc.code)
			}
			if d := after.Attempts - before.Attempts; d != 1 {
				t.Errorf("%d attempts, want 1 (no retry)", d)
			}
			if d := after.Errors - before.Errors; d != 1 {
				t.Errorf("%d errors counted, want 1", d)
			}
		})
	}
	if h, err := s.Head(t.Context(), "c"); err != nil || h != 0 {
		t.Errorf("Head after failed appends = %d, %v; want 0 (nothing written)", h, err)
	}
}

// TestRetryAfterTerminatedBackend kills the server process serving an
// Append while the call is in progress: the client sees admin_shutdown
// (57P01), and the store retries on a fresh connection and succeeds.
func TestRetryAfterTerminatedBackend(t *testing.T) {
	o := testOptions(schemaURL(t))
	o.ApplicationName = "charla_retry_" + randHex(4)
	s := openOpts(t, o)
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "first", "one"))

	admin := poolFor(t, o.URL)
	lock, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	// Hold the conversation's row lock so that the Append blocks in the server.
	if _, err := lock.Exec(ctx, `SELECT 1 FROM conversations WHERE id = 'c' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Ops["append"]
	done := make(chan error, 1)
	var res []store.AppendResult
	go func() {
		var err error
		res, err = s.Append(ctx, []charla.Message{tmsg("c", "second", "two")})
		done <- err
	}()
	pid := waitBlocked(t, admin, o.ApplicationName, 0)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, admin, o.ApplicationName, pid) // the retry, blocked again on the lock
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Append across a terminated backend: %v", err)
	}
	if res[0].Seq != 2 || res[0].Duplicate {
		t.Errorf("result %+v, want seq 2, new", res[0])
	}
	after := s.Stats().Ops["append"]
	if d := after.Attempts - before.Attempts; d != 2 {
		t.Errorf("%d attempts, want 2", d)
	}
	if d := after.Retries - before.Retries; d != 1 {
		t.Errorf("%d retries, want 1", d)
	}
	if got, err := s.Range(ctx, "c", 0, 10); err != nil || len(got) != 2 {
		t.Errorf("Range = %d messages, %v; want 2", len(got), err)
	}
}

// TestAppendRaceIsRetried makes another writer store the same pair while
// our Append is blocked: the unique violation is retried and reported as a
// duplicate, and no seq is burnt.
func TestAppendRaceIsRetried(t *testing.T) {
	o := testOptions(schemaURL(t))
	o.ApplicationName = "charla_race_" + randHex(4)
	s := openOpts(t, o)
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "first", "one"))
	admin := poolFor(t, s.opts.URL)
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	// The competing writer: takes the conversation lock and inserts the pair.
	if _, err := tx.Exec(ctx, `UPDATE conversations SET head = 2 WHERE id = 'c'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO messages (conversation_id, seq, client_msg_id, sender_id, sender_role, body, created_at)
		VALUES ('c', 2, 'x', 'other', 'agent', '{"text":"theirs"}', now())`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var res []store.AppendResult
	go func() {
		var err error
		res, err = s.Append(ctx, []charla.Message{tmsg("c", "x", "mine"), tmsg("c", "y", "also mine")})
		done <- err
	}()
	waitBlocked(t, admin, o.ApplicationName, 0) // the Append waits for the competitor
	before := s.Stats().Ops["append"]
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Append: %v", err)
	}
	if d := s.Stats().Ops["append"].Retries - before.Retries; d != 1 {
		t.Errorf("%d retries, want 1 (the unique violation)", d)
	}
	if !res[0].Duplicate || res[0].Seq != 2 || res[1].Duplicate || res[1].Seq != 3 {
		t.Errorf("results %+v, want x duplicate at 2 and y new at 3", res)
	}
	if h, _ := s.Head(ctx, "c"); h != 3 {
		t.Errorf("Head = %d, want 3", h)
	}
}

func TestAppendSequenced(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "a", "1"), tmsg("c", "b", "2"))
	ts := time.Date(2025, 5, 1, 12, 0, 0, 123456789, time.UTC)
	spooled := func(seq charla.Seq, id string) charla.Message {
		m := tmsg("c", id, id)
		m.Seq, m.TS = seq, ts
		return m
	}
	batch := []charla.Message{spooled(3, "c"), spooled(4, "d"), spooled(5, "e")}
	other := tmsg("new", "z", "z")
	other.Seq, other.TS = 1, ts
	batch = append(batch, other)

	res, err := s.AppendSequenced(ctx, batch)
	if err != nil {
		t.Fatalf("AppendSequenced: %v", err)
	}
	for i, r := range res {
		if r.Duplicate || r.Seq != batch[i].Seq || !r.TS.Equal(ts.Truncate(time.Microsecond)) {
			t.Errorf("result %d: %+v, want new at seq %d", i, r, batch[i].Seq)
		}
	}
	// Draining again (a crash between the commit and the spool's Remove)
	// changes nothing.
	res, err = s.AppendSequenced(ctx, batch)
	if err != nil {
		t.Fatalf("second AppendSequenced: %v", err)
	}
	for i, r := range res {
		if !r.Duplicate || r.Seq != batch[i].Seq {
			t.Errorf("re-drain result %d: %+v, want duplicate at %d", i, r, batch[i].Seq)
		}
	}
	if h, _ := s.Head(ctx, "c"); h != 5 {
		t.Errorf("Head(c) = %d, want 5", h)
	}
	if h, _ := s.Head(ctx, "new"); h != 1 {
		t.Errorf("Head(new) = %d, want 1", h)
	}
	// Append continues after the drained messages.
	if r := mustAppend(t, s, tmsg("c", "f", "6")); r[0].Seq != 6 {
		t.Errorf("Append after drain got seq %d, want 6", r[0].Seq)
	}

	t.Run("ConflictWritesNothing", func(t *testing.T) {
		before := s.Stats().Ops["append_sequenced"]
		clash := spooled(6, "not-f")
		_, err := s.AppendSequenced(ctx, []charla.Message{spooled(7, "g"), clash})
		var ce *SeqConflictError
		if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) || IsRetryable(err) {
			t.Fatalf("AppendSequenced over a taken seq = %v; want a *SeqConflictError", err)
		}
		want := SeqConflict{Conv: "c", Seq: 6, ClientMsgID: "not-f", StoredClientMsgID: "f"}
		if len(ce.Conflicts) != 1 || ce.Conflicts[0] != want {
			t.Errorf("conflicts %+v, want [%+v]", ce.Conflicts, want)
		}
		if h, _ := s.Head(ctx, "c"); h != 6 {
			t.Errorf("Head = %d after a failed drain, want 6 (nothing written)", h)
		}
		if d := s.Stats().Ops["append_sequenced"].Attempts - before.Attempts; d != 1 {
			t.Errorf("%d attempts, want 1", d)
		}
	})

	t.Run("ConflictInCall", func(t *testing.T) {
		_, err := s.AppendSequenced(ctx, []charla.Message{spooled(9, "p"), spooled(9, "q")})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("two messages at one seq = %v, want ErrConflict", err)
		}
	})

	t.Run("ZeroSeqInvalid", func(t *testing.T) {
		_, err := s.AppendSequenced(ctx, []charla.Message{tmsg("c", "zero", "")})
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("seq 0 = %v, want ErrInvalid", err)
		}
	})

	t.Run("RepeatInCall", func(t *testing.T) {
		res, err := s.AppendSequenced(ctx, []charla.Message{spooled(7, "g"), spooled(7, "g")})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Duplicate || !res[1].Duplicate || res[1].Seq != 7 {
			t.Errorf("results %+v, want the first new and the second its duplicate", res)
		}
	})
}

func TestStats(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "a", "1"))
	if _, err := s.Range(ctx, "c", 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReadCursor(ctx, "c", "u", 1); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Pool.MaxConns != 4 || st.Pool.TotalConns < 1 || st.Pool.AcquireCount < 3 {
		t.Errorf("pool stats %+v", st.Pool)
	}
	for _, name := range []string{"append", "range", "set_read_cursor"} {
		o := st.Ops[name]
		if o.Calls != 1 || o.Attempts != 1 || o.Errors != 0 || o.LatencySum <= 0 || o.MaxLatency <= 0 {
			t.Errorf("%s stats %+v", name, o)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Stats() // safe after Close
	if _, err := s.Head(ctx, "c"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Head after Close = %v", err)
	}
	if s.Stats().Ops["head"].Errors != 1 {
		t.Errorf("closed-store error not counted")
	}
}

// waitBlocked waits for a backend of application appName (other than pid
// not) to wait on a lock, and returns its pid.
func waitBlocked(t *testing.T, admin *pgxpool.Pool, appName string, not int32) int32 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var pid int32
		err := admin.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock' AND pid <> $2`, appName, not).Scan(&pid)
		if err == nil {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no blocked backend appeared")
	return 0
}
