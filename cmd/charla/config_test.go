package main

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"charla/actors"
	"charla/transport"
)

// Every flag lands on its package's field, the one heartbeat-timeout on
// both the actors and the edge, and the defaults are the packages' own.
func TestFlagsBindOntoPackageConfigs(t *testing.T) {
	c, err := parseConfig([]string{"--auth-mode", "dev", "--heartbeat-timeout", "30s", "--shutdown-timeout=3s",
		"--allowed-origins", " https://a.example , https://b.example ", "--store-breaker-cooldown", "7s",
		"--db-max-conns", "9", "--migrate", "--database-url", "postgres://u@h/db"}, func(string) string { return "" }, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	want := actors.DefaultConfig()
	want.HeartbeatTimeout, want.ShutdownGrace, want.StoreBreaker.Cooldown = 30*time.Second, 3*time.Second, 7*time.Second
	if c.Actors.Bot.Flow == nil {
		t.Error("serve has no chatbot flow: the embedded default is its default")
	}
	want.Bot.Flow = c.Actors.Bot.Flow
	if !reflect.DeepEqual(c.Actors, want) {
		t.Errorf("actors config\n got %+v\nwant %+v", c.Actors, want)
	}
	if c.Transport.HeartbeatTimeout != 30*time.Second {
		t.Errorf("transport heartbeat timeout %s, want the actors' 30s", c.Transport.HeartbeatTimeout)
	}
	if got := strings.Join(c.Transport.Origins, " "); got != "https://a.example https://b.example" {
		t.Errorf("origins %q", got)
	}
	if d := transport.DefaultConfig(); c.Transport.MaxFrameBytes != d.MaxFrameBytes || c.Transport.ConnectTimeout != d.ConnectTimeout {
		t.Errorf("transport defaults not the package's: %+v", c.Transport)
	}
	if c.DB.MaxConns != 9 || !c.DB.AutoMigrate || c.DB.URL != "postgres://u@h/db" || c.DB.ApplicationName != "charla" {
		t.Errorf("database options %+v", c.DB)
	}
}

// Each problem is told once, in the words of the flag that causes it.
func TestConfigProblems(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"zero interval", []string{"--heartbeat-interval", "0s"}, []string{"heartbeat-interval must be positive (got 0s)"}},
		{"shared timeout refused once", []string{"--heartbeat-timeout", "-1s"}, []string{"heartbeat-timeout must be positive (got -1s)"}},
		{"interval not below timeout", []string{"--heartbeat-interval", "10s"}, []string{"heartbeat-timeout (10s) must be longer than heartbeat-interval (10s)"}},
		{"breaker", []string{"--store-breaker-failures", "0", "--store-breaker-cooldown", "0s"},
			[]string{"store-breaker-failures must be at least 1 (got 0)", "store-breaker-cooldown must be positive (got 0s)"}},
		{"body above frame", []string{"--max-body-bytes", "4096", "--max-frame-bytes", "2048"}, []string{"max-body-bytes (4096) must not exceed max-frame-bytes (2048)"}},
		{"auth mode", []string{"--auth-mode", "open"}, []string{`auth-mode "open": must be jwt or dev`}},
		{"database in flag words", []string{"--database-url", "postgres://u@h/db", "--db-max-conns", "5", "--db-min-conns", "6", "--db-retry-max-delay", "1ms"},
			[]string{"db-min-conns must not exceed db-max-conns (5), got 6", "db-retry-max-delay must be at least db-retry-base-delay (50ms), got 1ms"}},
		{"migrate without database", []string{"--migrate"}, []string{"migrate needs database-url"}},
		{"sends in flight past the queue", []string{"--max-sends-in-flight", "1024"}, []string{"max-sends-in-flight (1024) must be below send-queue-frames (1024)"}},
		{"no sends in flight", []string{"--max-sends-in-flight", "0", "--send-queue-frames", "8"},
			[]string{"max-sends-in-flight must be at least 1 (got 0)", "send-queue-frames must be at least 16 (got 8)"}},
		{"bad values", []string{"--max-subscriptions", "many", "--migrate=maybe"}, []string{`--max-subscriptions="many": not a whole number`, `--migrate="maybe": not true or false`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--auth-mode", "dev"}, tc.args...)
			_, err := parseConfig(args, func(string) string { return "" }, nil, true)
			if err == nil {
				t.Fatal("no problem reported")
			}
			for _, w := range tc.want {
				if n := strings.Count(err.Error(), w); n != 1 {
					t.Errorf("%q reported %d times in:\n%v", w, n, err)
				}
			}
		})
	}
}

func TestFlagSetParse(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		s       string
		b       bool
		d       time.Duration
		problem string
	}{
		{"defaults", nil, nil, "def", false, time.Second, ""},
		{"space and equals", []string{"--s", "x", "-d=2s"}, nil, "x", false, 2 * time.Second, ""},
		{"bare bool", []string{"--b", "--s", "y"}, nil, "y", true, time.Second, ""},
		{"bool with value", []string{"--b=false"}, nil, "def", false, time.Second, ""},
		{"flag over environment", []string{"--s", "flag"}, map[string]string{"S": "env"}, "flag", false, time.Second, ""},
		{"environment", nil, map[string]string{"S": "env", "D": "3s"}, "env", false, 3 * time.Second, ""},
		{"no dash", []string{"s", "x"}, nil, "def", false, time.Second, `unknown argument "s"`},
		{"unknown flag takes its value along", []string{"--nope", "1", "--s", "z"}, nil, "z", false, time.Second, `unknown argument "--nope"`},
		{"missing value", []string{"--s"}, nil, "def", false, time.Second, "--s needs a value"},
		{"bad environment", nil, map[string]string{"D": "soon"}, "def", false, time.Second, `D="soon": not a duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s string
			var b bool
			var d time.Duration
			fs := flagSet{
				{name: "s", env: "S", value: strVar(&s, "def")},
				{name: "b", value: boolVar(&b, false)},
				{name: "d", env: "D", value: durVar(&d, time.Second)},
			}
			err := fs.parse(tc.args, func(k string) string { return tc.env[k] }, nil)
			if s != tc.s || b != tc.b || d != tc.d {
				t.Errorf("got s=%q b=%v d=%s, want s=%q b=%v d=%s", s, b, d, tc.s, tc.b, tc.d)
			}
			switch {
			case tc.problem == "" && err != nil:
				t.Errorf("unexpected problem: %v", err)
			case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
				t.Errorf("problem %v, want one mentioning %q", err, tc.problem)
			}
			if err != nil && strings.Contains(err.Error(), `"1"`) {
				t.Errorf("a value was reported as an argument of its own: %v", err)
			}
		})
	}
}

// --help prints the table and hides secrets.
func TestHelpHidesSecrets(t *testing.T) {
	var out bytes.Buffer
	env := map[string]string{"CHARLA_JWT_SECRET": "0123456789abcdef0123456789abcdef", "DATABASE_URL": "postgres://u:pw@h/db"}
	_, err := parseConfig([]string{"--help"}, func(k string) string { return env[k] }, &out, true)
	if !errors.Is(err, errHelp) {
		t.Fatalf("err %v, want errHelp", err)
	}
	for _, secret := range env {
		if strings.Contains(out.String(), secret) {
			t.Errorf("help shows %q:\n%s", secret, out.String())
		}
	}
	if !strings.Contains(out.String(), "--heartbeat-timeout") {
		t.Errorf("help lacks the settings:\n%s", out.String())
	}
}
