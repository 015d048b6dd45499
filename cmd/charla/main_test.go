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
	"go.uber.org/goleak"

	"charla"
	"charla/transport/transporttest"
	"charla/transport/wire"
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
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
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
	logs *bytes.Buffer
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
	var logs bytes.Buffer
	cmd := exec.Command(binary, append([]string{"serve", "--addr", addr, "--data-dir", dataDir, "--auth-mode", "dev"}, extra...)...)
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
