package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExpandAndNodeAddrs(t *testing.T) {
	got := Expand("charla serve --addr {addr} --cluster-node-id n{i} --cluster-name {name} --x {port}", 2, "127.0.0.1:9002", "b1")
	if want := "charla serve --addr 127.0.0.1:9002 --cluster-node-id n2 --cluster-name b1 --x 9002"; got != want {
		t.Fatalf("Expand = %q, want %q", got, want)
	}
	addrs, err := NodeAddrs("127.0.0.1:9001", nil, 3)
	if err != nil || strings.Join(addrs, ",") != "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003" {
		t.Fatalf("NodeAddrs = %v, %v", addrs, err)
	}
	if _, err := NodeAddrs("127.0.0.1:9001", []string{"a:1"}, 2); err == nil {
		t.Fatal("two nodes, one address: no error")
	}
	if _, err := NodeAddrs("x", nil, 0); err == nil {
		t.Fatal("zero nodes: no error")
	}
}

func TestFlagValue(t *testing.T) {
	cmd := `CHARLA_CLUSTER_SHARDS=16 GOMAXPROCS=1 taskset -c 0 ./charla serve --cluster-node-id n3 --database-url 'postgres://u@h/db?sslmode=disable&x=1' -cluster-name="my name"`
	for name, want := range map[string]string{
		"cluster-node-id": "n3",
		"database-url":    "postgres://u@h/db?sslmode=disable&x=1",
		"cluster-name":    "my name",
		"cluster-shards":  "16",
	} {
		if got, ok := FlagValue(cmd, name); !ok || got != want {
			t.Errorf("FlagValue(%s) = %q %v, want %q", name, got, ok, want)
		}
	}
	if _, ok := FlagValue(cmd, "cluster-nats-url"); ok {
		t.Error("a flag that is not there was found")
	}
}

// Two fake engines from one template: each on its address, one killed
// and relaunched on its own, both stopped together.
func TestClusterStartKillRelaunch(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t)}
	var logs [2]bytes.Buffer
	tmpl := fmt.Sprintf("%s={addr} %s -test.run=^$ --cluster-node-id n{i}", engineEnv, os.Args[0])
	ctx := context.Background()
	if _, err := StartCluster(ctx, ClusterConfig{Template: "x --cluster-node-id n{i}", Addrs: addrs}); err == nil {
		t.Fatal("a template without {addr} for two nodes: no error")
	}
	c, err := StartCluster(ctx, ClusterConfig{Template: tmpl, Addrs: addrs, Name: "b",
		Log: func(i int) io.Writer { return &logs[i] }})
	if err != nil {
		t.Fatal(err)
	}
	pids := c.PIDs()
	if pids[0] == 0 || pids[1] == 0 || pids[0] == pids[1] || c.NodeID(1) != "n2" {
		t.Fatalf("pids %v, node 2 id %q", pids, c.NodeID(1))
	}
	if err := c.Kill(0, syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p := c.PIDs(); p[0] != 0 || p[1] != pids[1] {
		t.Fatalf("after killing node 1: pids %v", p)
	}
	if err := c.Relaunch(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if p := c.PIDs(); p[0] == 0 || p[0] == pids[0] {
		t.Fatalf("after relaunching node 1: pids %v (was %v)", p, pids)
	}
	if err := c.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p := c.PIDs(); p[0] != 0 || p[1] != 0 {
		t.Fatalf("after stop: pids %v", p)
	}
}
