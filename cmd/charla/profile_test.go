package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// strongSecret passes production's entropy rule.
const strongSecret = "q8Vz1LmR4tXw7bNc0PyK3sJd6HgF9aEu2oZi5UrT"

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "charla.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// effectiveOf is the value and source check-config reports for name.
func effectiveOf(c config, name string) (string, source) {
	for _, e := range c.effective {
		if e.name == name {
			return e.value, e.source
		}
	}
	return "", ""
}

// Flag over env over file over profile over default, one setting through
// all of them.
func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, "log-level: warn\n")
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantSrc source
	}{
		{"default", nil, nil, "info", sourceDefault},
		{"profile", []string{"--profile", "development"}, nil, "debug", sourceProfile},
		{"profile from the environment", nil, map[string]string{"CHARLA_PROFILE": "development"}, "debug", sourceProfile},
		{"file over profile", []string{"--profile", "development", "--config", file}, nil, "warn", sourceFile},
		{"file named in the environment", []string{"--profile=development"}, map[string]string{"CHARLA_CONFIG": file}, "warn", sourceFile},
		{"env over file", []string{"--profile", "development", "--config", file}, map[string]string{"CHARLA_LOG_LEVEL": "error"}, "error", sourceEnv},
		{"flag over env", []string{"--profile", "development", "--config", file, "--log-level", "info"}, map[string]string{"CHARLA_LOG_LEVEL": "error"}, "info", sourceFlag},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--auth-mode", "dev"}, tc.args...)
			c, err := parseConfig(args, func(k string) string { return tc.env[k] }, nil, true)
			if err != nil {
				t.Fatal(err)
			}
			v, src := effectiveOf(c, "log-level")
			if c.LogLevel != tc.want || v != tc.want || src != tc.wantSrc {
				t.Errorf("log-level %q (reported %q from %s), want %q from %s", c.LogLevel, v, src, tc.want, tc.wantSrc)
			}
		})
	}
}

// Each profile's defaults and rules, through check-config: staging and
// production refuse dev auth; production wants origins and a strong secret,
// and every problem is listed in one go.
func TestProfiles(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		out      []string // lines of the report, by fields
		problems []string
	}{
		{"development", []string{"--profile", "development"}, 0,
			[]string{"auth-mode profile dev", "log-format profile console", "log-level profile debug"}, nil},
		{"staging refuses dev auth", []string{"--profile", "staging", "--auth-mode", "dev"}, 2, nil,
			[]string{"profile staging: auth-mode dev is refused"}},
		{"production refuses dev auth", []string{"--profile", "production", "--auth-mode", "dev", "--allowed-origins", "https://panel.example"}, 2, nil,
			[]string{"profile production: auth-mode dev is refused"}},
		{"production lists every problem", []string{"--profile", "production", "--jwt-secret", strings.Repeat("ab", 20), "--allowed-origins", "*"}, 2, nil,
			[]string{"profile production: allowed-origins must name", "profile production: jwt-secret is too weak"}},
		{"production without origins", []string{"--profile", "production", "--jwt-secret", strongSecret}, 2, nil,
			[]string{"profile production: allowed-origins must name"}},
		{"production done right", []string{"--profile", "production", "--jwt-secret", strongSecret, "--allowed-origins", "https://panel.example"}, 0,
			[]string{"auth-mode profile jwt", "log-format profile json", "allowed-origins flag https://panel.example"}, nil},
		{"unknown profile", []string{"--profile", "prod", "--auth-mode", "dev"}, 2, nil,
			[]string{`profile "prod": must be development, staging or production`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), append([]string{"check-config"}, tc.args...), &out, &errOut, func(string) string { return "" })
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errOut.String())
			}
			lines := reportLines(out.String())
			for _, want := range tc.out {
				if !lines[want] {
					t.Errorf("report lacks %q:\n%s", want, out.String())
				}
			}
			for _, p := range tc.problems {
				if n := strings.Count(errOut.String(), p); n != 1 {
					t.Errorf("%q listed %d times in:\n%s", p, n, errOut.String())
				}
			}
		})
	}
}

// reportLines is check-config's report with each line's fields joined by
// one space, whatever the column widths.
func reportLines(report string) map[string]bool {
	out := map[string]bool{}
	for line := range strings.SplitSeq(report, "\n") {
		out[strings.Join(strings.Fields(line), " ")] = true
	}
	return out
}

// The real binary refuses to serve production with dev auth, before
// opening anything.
func TestServeProductionWithDevAuthExits2(t *testing.T) {
	cmd := exec.Command(binary, "serve", "--profile", "production", "--auth-mode", "dev", "--addr", freeAddr(t), "--data-dir", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2; stderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"profile production: auth-mode dev is refused", "profile production: allowed-origins must name"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// check-config says where each value came from and never prints a secret:
// the database URL keeps all but its password.
func TestCheckConfigSourcesAndMasking(t *testing.T) {
	file := writeConfig(t, `
database-url: postgres://charla:filepassword@db.internal:5432/charla
allowed-origins:
  - https://a.example
  - https://b.example
whatsapp-app-secret: fileappsecret
`)
	env := map[string]string{"CHARLA_JWT_SECRET": strongSecret, "CHARLA_CONFIG": file}
	args := []string{"check-config", "--profile", "production", "--whatsapp-token", "flagtoken", "--whatsapp-verify-token", "verifytoken"}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] }); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
	}
	lines := reportLines(out.String())
	for _, want := range []string{
		"profile: production",
		"config env " + file,
		"profile flag production",
		"auth-mode profile jwt",
		"jwt-secret env (set; not shown)",
		"database-url file postgres://charla:xxxxx@db.internal:5432/charla",
		"allowed-origins file https://a.example,https://b.example",
		"whatsapp-app-secret file (set; not shown)",
		"whatsapp-token flag (set; not shown)",
		"heartbeat-timeout default 10s",
	} {
		if !lines[want] {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, secret := range []string{strongSecret, "filepassword", "fileappsecret", "flagtoken", "verifytoken"} {
		if strings.Contains(out.String()+errOut.String(), secret) {
			t.Errorf("check-config shows %q:\n%s", secret, out.String())
		}
	}
}

// A bad file is refused with every problem, each with its line.
func TestBadConfigFileListsEveryProblem(t *testing.T) {
	file := writeConfig(t, `auth-mode: dev
max-frame-bytes: lots
frobnicate: 3
heartbeat-timeout: {seconds: 10}
migrate: maybe
config: other.yaml
`)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"check-config", "--config", file}, &out, &errOut, func(string) string { return "" })
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{
		`line 2: max-frame-bytes="lots": not a whole number`,
		`line 3: unknown setting "frobnicate"`,
		`line 4: heartbeat-timeout: must be a single value or a list`,
		`line 5: migrate="maybe": not true or false`,
		`line 6: config cannot name another file`,
	} {
		if n := strings.Count(errOut.String(), want); n != 1 {
			t.Errorf("%q listed %d times in:\n%s", want, n, errOut.String())
		}
	}
	for _, bad := range []string{"not yaml: [", "- a list\n- at the top\n"} {
		var errOut bytes.Buffer
		code := run(context.Background(), []string{"check-config", "--auth-mode", "dev", "--config", writeConfig(t, bad)}, &out, &errOut, func(string) string { return "" })
		if code != 2 || !strings.Contains(errOut.String(), "config ") {
			t.Errorf("file %q: exit %d, stderr:\n%s", bad, code, errOut.String())
		}
	}
}

// At startup each configured dependency is checked and summed up, into the
// log file; one that is down is reported and the engine serves anyway,
// within the 30 s startup budget, even with a database that accepts
// connections and never answers.
func TestStartupSummary(t *testing.T) {
	soap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusMethodNotAllowed) }))
	defer soap.Close()
	hung, err := net.Listen("tcp", "127.0.0.1:0") // accepts (the kernel does), never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	cases := []struct {
		name    string
		flags   []string
		summary string
	}{
		{"soap up, graph down", []string{"--soap-url", soap.URL, "--whatsapp-app-secret", "s", "--whatsapp-verify-token", "v",
			"--whatsapp-token", "t", "--whatsapp-graph-url", "http://" + freeAddr(t) + "/v21.0", "--bot-flow", "off"},
			"store=up soap=up whatsapp-graph=down"},
		{"database hung", []string{"--database-url", "postgres://charla@" + hung.Addr().String() + "/charla"},
			"store=down soap=off whatsapp-graph=off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "charla.log")
			started := time.Now()
			p := startEngine(t, freeAddr(t), t.TempDir(), append([]string{"--log-file", logFile}, tc.flags...)...)
			if took := time.Since(started); took > 30*time.Second {
				t.Errorf("startup took %s, past the 30 s budget", took)
			}
			_ = p.cmd.Process.Signal(os.Interrupt)
			_ = p.cmd.Wait()
			data, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			states := map[string]string{}
			var summary string
			for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
				var e struct{ Message, Dependency, State, Dependencies string }
				if json.Unmarshal(sc.Bytes(), &e) != nil {
					continue
				}
				switch {
				case strings.HasPrefix(e.Message, "startup check"):
					states[e.Dependency] = e.State
				case e.Message == "startup summary":
					summary = e.Dependencies
				}
			}
			if summary != tc.summary {
				t.Errorf("summary %q, want %q; log:\n%s", summary, tc.summary, data)
			}
			for dep := range strings.SplitSeq(tc.summary, " ") {
				name, state, _ := strings.Cut(dep, "=")
				if states[name] != state {
					t.Errorf("%s: line says %q, want %q", name, states[name], state)
				}
			}
			if strings.Contains(p.logs.String(), "startup summary") {
				t.Errorf("with --log-file the log went to stderr too:\n%s", p.logs.String())
			}
		})
	}
}

// --log-file rotates past its size: the old file is renamed with a
// timestamp and a new one opened.
func TestLogFileRotates(t *testing.T) {
	dir := t.TempDir()
	c, err := parseConfig([]string{"--auth-mode", "dev", "--log-file", filepath.Join(dir, "charla.log"), "--log-max-size-mb", "1"}, nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	log, closeLog := c.logger(os.Stderr)
	line := strings.Repeat("x", 1000)
	for i := 0; i < 1200; i++ { // about 1.2 MB
		log.Info().Int("i", i).Msg(line)
	}
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "charla-*.log"))
	if len(rotated) != 1 {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("rotated files %v, want one; dir: %v", rotated, entries)
	}
	if !regexp.MustCompile(`charla-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}\.log$`).MatchString(rotated[0]) {
		t.Errorf("rotated file %s not named by its time", rotated[0])
	}
	for _, f := range []string{rotated[0], filepath.Join(dir, "charla.log")} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() == 0 || st.Size() > 1<<20 {
			t.Errorf("%s: size %d, want a non-empty file within 1 MB", f, st.Size())
		}
	}
}
