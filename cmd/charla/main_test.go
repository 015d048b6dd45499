package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"charla"
	"charla/ratelimit"
	"charla/store/bolt"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/transport/transporttest"
	"charla/wire"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "charla-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "charla")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build charla: %v\n%s", err, out)
		os.Exit(1)
	}
	// lumberjack's Close leaves its log-pruning goroutine behind (one per
	// Logger, for the process's life in serve): TestLogFileRotates's.
	leaks := append(transporttest.LeakOptions(), goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
	code := pgtest.Main(m, leaks...)
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestInvalidConfigListsEveryProblem(t *testing.T) {
	env := map[string]string{"CHARLA_HEARTBEAT_TIMEOUT": "soon", "CHARLA_LOG_FORMAT": "xml"}
	args := []string{"serve", "--addr", "nohost", "--auth-mode", "jwt", "--jwt-secret", "short",
		"--heartbeat-interval=20s", "--max-frame-bytes", "10", "--allowed-origins", "panel.example", "--bogus", "1"}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, func(k string) string { return env[k] })
	if code != 2 {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		"CHARLA_HEARTBEAT_TIMEOUT", "log-format", "addr", "jwt-secret",
		"heartbeat-timeout", "max-frame-bytes", "allowed-origins", `"--bogus"`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not mention %s:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), `"1"`) {
		t.Errorf("the value of an unknown flag is reported as an argument of its own:\n%s", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout not empty: %s", stdout.String())
	}
}

func TestCheckConfigAndToken(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"check-config ok", []string{"check-config", "--auth-mode", "dev"}, 0, "configuration ok"},
		{"check-config bad", []string{"check-config"}, 2, ""},
		{"token", []string{"token", "--secret", "s3cr3t", "--user", "ana", "--role", "admin"}, 0, "."},
		{"token without user", []string{"token", "--secret", "s3cr3t"}, 2, ""},
		{"token with bad role", []string{"token", "--secret", "s", "--user", "u", "--role", "boss"}, 2, ""},
		{"version", []string{"version"}, 0, "charla"},
		{"unknown command", []string{"fly"}, 2, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut, func(string) string { return "" }); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Fatalf("stdout %q does not contain %q", out.String(), tc.out)
			}
		})
	}
}

// engineProc is the engine as a child process.
type engineProc struct {
	cmd  *exec.Cmd
	addr string
	logs *transporttest.LogBuffer
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startEngine(t *testing.T, addr, dataDir string, extra ...string) *engineProc {
	t.Helper()
	var logs transporttest.LogBuffer
	// Loopback allow-listed, as for every load run: these tests measure
	// crashes and outages, not the rate limits.
	cmd := exec.Command(binary, append([]string{"serve", "--addr", addr, "--data-dir", dataDir, "--auth-mode", "dev",
		"--rate-limit-allow", strings.Join(ratelimit.LoopbackCIDRs, ",")}, extra...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &engineProc{cmd: cmd, addr: addr, logs: &logs}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p
		}
	}
	t.Fatalf("engine did not listen on %s:\n%s", addr, logs.String())
	return nil
}

func dial(t *testing.T, addr, user string) *transporttest.Client {
	t.Helper()
	c, err := transporttest.DialURL(t, fmt.Sprintf("ws://%s/v1/ws?user=%s&role=agent", addr, user), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Next(10 * time.Second); f.Type != wire.TypeWelcome {
		t.Fatalf("first frame %+v", f)
	}
	return c
}

func sendN(t *testing.T, c *transporttest.Client, conv charla.ConvID, n int) []wire.Frame {
	t.Helper()
	for i := range n {
		c.Send(wire.Frame{Type: wire.TypeSend, Conv: conv, ClientMsgID: uuid.NewString(), Body: json.RawMessage(fmt.Sprintf(`{"text":"m%d"}`, i))})
	}
	acks := make([]wire.Frame, 0, n)
	for len(acks) < n {
		if f := c.Next(20 * time.Second); f.Type == wire.TypeAck {
			acks = append(acks, f)
		} else if f.Type == wire.TypeError {
			t.Fatalf("error %+v", f)
		}
	}
	return acks
}

func TestKill9LosesNothingAcked(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	p := startEngine(t, addr, dir)
	acks := sendN(t, dial(t, addr, "a"), "k9", 500)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	startEngine(t, addr, dir)
	c := dial(t, addr, "b")
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "k9"})
	if f := c.Next(10 * time.Second); f.Type != wire.TypeSubscribed || f.Head != 500 {
		t.Fatalf("after kill -9: %+v, want head 500", f)
	}
	for i, ack := range acks {
		f := c.Next(10 * time.Second)
		if f.Type != wire.TypeMsg || f.Seq != charla.Seq(i+1) || f.ClientMsgID != ack.ClientMsgID {
			t.Fatalf("message %d after restart: %+v, acked as %+v", i+1, f, ack)
		}
	}
	if more := sendN(t, c, "k9", 1); more[0].Seq != 501 {
		t.Fatalf("seq after restart %d, want 501", more[0].Seq)
	}
}

func TestSIGTERMDrainsWith1012(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	p := startEngine(t, addr, dir)
	c := dial(t, addr, "a")
	sendN(t, c, "term", 10)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client not closed on SIGTERM")
	}
	if code := c.CloseCode(); code != 1012 {
		t.Fatalf("close code %d, want 1012", code)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("engine exit: %v\n%s", err, p.logs.String())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	if !strings.Contains(p.logs.String(), "shutdown complete") {
		t.Fatalf("logs:\n%s", p.logs.String())
	}
}

func TestKill9DuringDatabaseOutage(t *testing.T) {
	dbURL := pgtest.SchemaURL(t)
	if _, err := postgres.MigrateURL(context.Background(), dbURL); err != nil {
		t.Fatal(err)
	}
	// A TCP proxy we can cut, between the engine and PostgreSQL.
	px, proxied := pgtest.Proxy(t, dbURL)
	flags := []string{"--database-url", proxied, "--store-write-timeout", "300ms", "--store-breaker-failures", "2",
		"--store-breaker-cooldown", "500ms", "--db-connect-timeout", "500ms", "--db-retry-attempts", "1"}

	dir, addr := t.TempDir(), freeAddr(t)
	p := startEngine(t, addr, dir, flags...)
	acks := sendN(t, dial(t, addr, "a"), "k9pg", 50)
	px.Stop() // the database is gone
	acks = append(acks, sendN(t, dial(t, addr, "a"), "k9pg", 100)...)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if err := px.Start(); err != nil { // the database is back
		t.Fatal(err)
	}
	if !strings.Contains(p.logs.String(), "store unavailable") {
		t.Fatalf("the first engine never noticed the outage:\n%s", p.logs.String())
	}
	p2 := startEngine(t, addr, dir, flags...)

	// The spool left by the killed engine drains on start.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var stored []string
	for deadline := time.Now().Add(30 * time.Second); len(stored) < len(acks); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acked messages in PostgreSQL after 30 s", len(stored), len(acks))
		}
		rows, err := conn.Query(ctx, `SELECT client_msg_id FROM messages WHERE conversation_id = 'k9pg' ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		stored = ids
	}
	if len(stored) != len(acks) {
		t.Fatalf("%d stored, %d acked", len(stored), len(acks))
	}
	for i, a := range acks {
		if a.Seq != charla.Seq(i+1) || stored[i] != a.ClientMsgID {
			t.Fatalf("seq %d: acked %+v, stored %s", i+1, a, stored[i])
		}
	}
	if !strings.Contains(p2.logs.String(), "spool drained into the store") {
		t.Fatalf("the restarted engine did not drain a spool:\n%s", p2.logs.String())
	}
	var maxSeq int64
	if err := conn.QueryRow(ctx, `SELECT max(seq) FROM messages WHERE conversation_id = 'k9pg'`).Scan(&maxSeq); err != nil || maxSeq != int64(len(acks)) {
		t.Fatalf("max seq %d (%v), want %d", maxSeq, err, len(acks))
	}
}

func TestChatSubcommand(t *testing.T) {
	e := transporttest.Start(t)
	var out, errOut bytes.Buffer
	code := chat([]string{"--addr", e.Addr, "--user", "ana", "--conv", "first"}, strings.NewReader("hola\nqué tal\n"), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{`"type":"welcome"`, `"type":"subscribed"`, `"text":"hola"`, `"text":"qué tal"`, `"type":"ack"`, `"seq":2`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
}

// Every setting is in the README's configuration table, so that the table
// an operator reads is the one the binary has.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var c config
	for _, s := range c.settings() {
		if row := fmt.Sprintf("| `--%s` | `%s` |", s.name, s.env); !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row %q", row)
		}
	}
}

// An earlier version's bbolt store is imported into the append-only log once,
// by `serve` at start or by `migrate-store`, and then renamed: history,
// seqs and idempotency carry over.
func TestLegacyStoreIsImported(t *testing.T) {
	for _, how := range []string{"serve", "migrate-store"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			old, err := bolt.Open(filepath.Join(dir, "charla.db"))
			if err != nil {
				t.Fatal(err)
			}
			var msgs []charla.Message
			for i := range 30 {
				msgs = append(msgs, charla.Message{Conv: "legacy", ClientMsgID: uuid.NewString(), Sender: charla.Sender{ID: "a", Role: charla.RoleAgent},
					Body: json.RawMessage(fmt.Sprintf(`{"text":"old %d"}`, i)), TS: time.Now().UTC().Truncate(time.Microsecond)})
			}
			if _, err := old.Append(context.Background(), msgs); err != nil {
				t.Fatal(err)
			}
			old.Close()
			if how == "migrate-store" {
				out, err := exec.Command(binary, "migrate-store", "--data-dir", dir).CombinedOutput()
				if err != nil {
					t.Fatalf("migrate-store: %v\n%s", err, out)
				}
			}
			addr := freeAddr(t)
			p := startEngine(t, addr, dir)
			if _, err := os.Stat(filepath.Join(dir, "charla.db.imported")); err != nil {
				t.Fatalf("charla.db not marked imported: %v\n%s", err, p.logs.String())
			}
			c := dial(t, addr, "b")
			c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "legacy"})
			if f := c.Next(10 * time.Second); f.Type != wire.TypeSubscribed || f.Head != 30 {
				t.Fatalf("after import: %+v, want head 30", f)
			}
			for i, m := range msgs {
				if f := c.Next(10 * time.Second); f.Type != wire.TypeMsg || f.Seq != charla.Seq(i+1) || f.ClientMsgID != m.ClientMsgID {
					t.Fatalf("message %d after import: %+v", i+1, f)
				}
			}
			c.Send(wire.Frame{Type: wire.TypeSend, Conv: "legacy", ClientMsgID: msgs[3].ClientMsgID, Body: json.RawMessage(`{"text":"again"}`)})
			if f := c.NextOf(wire.TypeAck, 10*time.Second); f.Seq != 4 || !f.Duplicate {
				t.Fatalf("resend of an imported message: %+v, want duplicate of seq 4", f)
			}
			if more := sendN(t, c, "legacy", 1); more[0].Seq != 31 {
				t.Fatalf("next seq %d, want 31", more[0].Seq)
			}
		})
	}
}
