package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"charla/bench/result"
)

// engineBinary is the charla binary TestMain builds.
var engineBinary string

// The cluster's services on this machine (docs/CLUSTER.md; .ci/run starts
// them).
const (
	pgAddr   = "127.0.0.1:5432"
	natsAddr = "127.0.0.1:4222"
)

// requireServices skips the test when PostgreSQL or NATS does not answer,
// and fails it under CI=true, where they must.
func requireServices(t *testing.T) {
	t.Helper()
	for _, a := range []string{pgAddr, natsAddr} {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s unreachable: %v (the cluster tests need PostgreSQL and NATS with JetStream)", a, err)
			}
			t.Skipf("%s unreachable: %v", a, err)
		}
		_ = c.Close()
	}
}

// freshDatabase creates a database for one test, migrated by the engine
// binary, and drops it at the end.
func freshDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, "postgres://postgres@"+pgAddr+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	defer admin.Close(context.Background())
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "charla_bench_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, "postgres://postgres@"+pgAddr+"/postgres?sslmode=disable"); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	url := "postgres://postgres@" + pgAddr + "/" + name + "?sslmode=disable"
	if out, err := exec.CommandContext(ctx, engineBinary, "migrate", "--database-url", url).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	return url
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// clusterCmd is the node template: every node of one run shares the
// database and the cluster name the bench makes up ({name}).
func clusterCmd(dbURL string) string {
	return fmt.Sprintf("%s serve --addr {addr} --auth-mode dev --log-level warn --database-url '%s' --cluster-nats-url nats://%s --cluster-name {name} --cluster-node-id n{i} --cluster-shards 8 --cluster-lease-ttl 1s --cluster-request-timeout 1s",
		engineBinary, dbURL, natsAddr)
}

// The cluster pieces against real engine processes, NATS and PostgreSQL:
// --nodes starts two nodes from one template; steady spreads its clients
// over them (--addrs) and splits send→deliver into same-node and
// cross-node; node-kill kills node 1 while it owns a busy conversation,
// measures the failover, restarts it, and checks PostgreSQL against the
// acks. The engine's delivery verdict is logged, not judged here: this
// tests the bench.
func TestClusterNodesSteadyAndNodeKill(t *testing.T) {
	requireServices(t)
	dbURL := freshDatabase(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "engine.log")

	t.Run("steady", func(t *testing.T) {
		out := filepath.Join(dir, "steady.json")
		var stdout, stderr bytes.Buffer
		code := run([]string{"steady", "--nodes", "2", "--addrs", freePort(t) + "," + freePort(t),
			"--conns", "12", "--convs", "4", "--rate", "200", "--duration", "1500ms", "--drain", "5s",
			"--engine-cmd", clusterCmd(dbURL), "--engine-log", logPath, "--out", out}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), tail(stderr.String()))
		}
		r, err := result.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		same, cross := r.LatencyMS[result.SendDeliverSameNode], r.LatencyMS[result.SendDeliverCrossNode]
		t.Logf("acked %d, send→ack p50 %.2f ms; deliver same node %d p50 %.2f ms, cross node %d p50 %.2f ms",
			r.Acked, r.LatencyMS[result.SendAck].P50, same.Count, same.P50, cross.Count, cross.P50)
		if r.Acked == 0 || same.Count == 0 || cross.Count == 0 || same.Count+cross.Count != r.LatencyMS[result.SendDeliver].Count {
			t.Fatalf("acked %d, deliveries same %d + cross %d of %d", r.Acked, same.Count, cross.Count, r.LatencyMS[result.SendDeliver].Count)
		}
		if !strings.Contains(stderr.String(), "settled") {
			t.Fatalf("the bench did not wait for the cluster to settle:\n%s", tail(stderr.String()))
		}
	})

	t.Run("node-kill", func(t *testing.T) {
		out := filepath.Join(dir, "node-kill.json")
		var stdout, stderr bytes.Buffer
		code := run([]string{"node-kill", "--nodes", "2", "--addrs", freePort(t) + "," + freePort(t),
			"--kills", "1", "--conns", "16", "--convs", "8", "--rate", "150", "--duration", "1s",
			"--failover-wait", "15s", "--resend-after", "2s", "--drain", "8s",
			"--engine-cmd", clusterCmd(dbURL), "--engine-log", logPath, "--out", out}, &stdout, &stderr)
		if code == 2 {
			t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), tail(stderr.String()))
		}
		r, err := result.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		d := r.Details
		t.Logf("exit %d; failover %.2fs; acked %d, resent %v; PostgreSQL: stored %v, lost %v, duplicated %v; ledger: lost %d duplicated %d; failures %v",
			code, d["failover_max_s"], r.Acked, d["resent"], d["pg_stored"], d["pg_lost"], d["pg_duplicated"], r.Lost, r.Duplicated, r.Failures)
		if d["kills"] != 1 || r.LatencyMS[result.Failover].Count != 1 || d["failover_max_s"] <= 0 || d["failover_max_s"] > 15 {
			t.Fatalf("kills %v, failover %+v", d["kills"], r.LatencyMS[result.Failover])
		}
		if r.Acked == 0 || d["pg_acked_checked"] != float64(r.Acked) || d["pg_lost"] != 0 || d["pg_duplicated"] != 0 {
			t.Fatalf("acked %d; PostgreSQL check %v", r.Acked, d)
		}
		if !strings.Contains(stderr.String(), "round 1: killed n1") {
			t.Fatalf("no round reported:\n%s", tail(stderr.String()))
		}
	})
}

// tail is the end of a long log, for failure messages.
func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}
