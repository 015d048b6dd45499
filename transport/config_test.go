package transport

import (
	"strings"
	"testing"
	"time"

	"charla/actors"
)

func TestDefaultConfigSharesTheActorsHeartbeat(t *testing.T) {
	if got, want := DefaultConfig().HeartbeatTimeout, actors.DefaultConfig().HeartbeatTimeout; got != want {
		t.Fatalf("heartbeat timeout %s, actors' %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	secret := []byte(strings.Repeat("s", MinSecretBytes))
	cases := []struct {
		name string
		edit func(*Config)
		want []string // substrings, each of its own problem; none = valid
	}{
		{"defaults with a secret", func(c *Config) { c.Auth.Secret = secret }, nil},
		{"dev needs no secret", func(c *Config) { c.Auth.Mode = AuthDev }, nil},
		{"origins", func(c *Config) { c.Auth.Mode, c.Origins = AuthDev, OriginPolicy{"*", "https://a.example", "a.example"} },
			[]string{`allowed-origins: "a.example"`}},
		{"every problem at once", func(c *Config) {
			c.Auth.Secret, c.MaxFrameBytes, c.ConnectTimeout, c.HeartbeatTimeout = secret[1:], 1023, 0, -time.Second
		}, []string{"jwt-secret must be at least 32 bytes", "max-frame-bytes must be at least 1024 (got 1023)",
			"connect-timeout must be positive", "heartbeat-timeout must be positive"}},
		{"auth mode", func(c *Config) { c.Auth.Mode = "" }, []string{`auth-mode "": must be jwt or dev`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", n, len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("no %q in:\n%v", w, err)
				}
			}
		})
	}
}
