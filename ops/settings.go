package ops

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"charla/ratelimit"
)

// The feature flags. Each is on unless an operator (or an alert rule's
// disable_flag) turns it off.
const (
	// FlagBotEnabled: the chatbot answers customers; off, customer messages
	// wait for an agent.
	FlagBotEnabled = "bot_enabled"
	// FlagPollingFallback: the long-polling endpoints (/v1/poll, /v1/send,
	// /v1/frames) serve; off, they answer 503 and clients stay on (or
	// retry) WebSocket.
	FlagPollingFallback = "polling_fallback"
	// FlagSOAPJobs: an inventory request slower than the answer budget
	// becomes a job; off, it is answered unavailable at the budget.
	FlagSOAPJobs = "soap_jobs"
)

var flagNames = []string{FlagBotEnabled, FlagPollingFallback, FlagSOAPJobs}

func knownFlag(name string) bool { return slices.Contains(flagNames, name) }

func flagList() string { return strings.Join(flagNames, ", ") }

// rateClasses are the rate-limit classes a change may name, as the
// engine's rate-limit-* flags do.
var rateClasses = []string{"auth", "chat", "media", "api", "ws"}

// Settings are the values in force of everything that changes without a
// restart. Every field is always set.
type Settings struct {
	LogLevel   string          `json:"log_level" yaml:"log_level"`
	RateLimits map[string]int  `json:"rate_limits" yaml:"rate_limits"` // per minute, by class: auth, chat, media, api, ws (0 = off)
	Flags      map[string]bool `json:"flags" yaml:"flags"`
	Alerts     Rules           `json:"alerts" yaml:"alerts"`
	// Changed and ChangedBy say when and by whom (file, admin, alert) the
	// last change was made; zero before any.
	Changed   time.Time `json:"changed,omitzero" yaml:"-"`
	ChangedBy string    `json:"changed_by,omitempty" yaml:"-"`
}

// Change is what an operator changes: only the fields present (a file's
// keys, a PATCH body's) change; the rest keep their values. Alerts, when
// present, replace every rule.
type Change struct {
	LogLevel   *string         `json:"log_level,omitempty" yaml:"log_level,omitempty"`
	RateLimits map[string]int  `json:"rate_limits,omitempty" yaml:"rate_limits,omitempty"`
	Flags      map[string]bool `json:"flags,omitempty" yaml:"flags,omitempty"`
	Alerts     *Rules          `json:"alerts,omitempty" yaml:"alerts,omitempty"`
}

// Appliers put settings into effect. Each is called only with values
// that passed validation, and only when its setting changed.
type Appliers struct {
	LogLevel   func(zerolog.Level)
	RateLimits func(ratelimit.Config) error
	Alerts     func(Rules) error
}

// Runtime holds the settings in force and is the one way to change them:
// by the settings file (Reload, on SIGHUP), by the admin endpoint (Apply)
// and by alert rules (DisableFlag). It is safe for concurrent use; flags
// are read lock-free.
type Runtime struct {
	mu    sync.Mutex // serializes changes
	cur   atomic.Pointer[Settings]
	flags map[string]*atomic.Bool // fixed set, read by Enabled
	apply Appliers
	log   zerolog.Logger
}

// NewRuntime starts from initial (the engine's startup values: its flags,
// environment and defaults), which must be valid.
func NewRuntime(initial Settings, apply Appliers, log zerolog.Logger) (*Runtime, error) {
	s := initial
	s.Flags = maps.Clone(initial.Flags)
	if s.Flags == nil {
		s.Flags = map[string]bool{}
	}
	for _, name := range flagNames {
		if _, ok := s.Flags[name]; !ok {
			s.Flags[name] = true
		}
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("runtime settings: %w", err)
	}
	rt := &Runtime{flags: map[string]*atomic.Bool{}, apply: apply, log: log}
	for name, on := range s.Flags {
		rt.flags[name] = &atomic.Bool{}
		rt.flags[name].Store(on)
	}
	rt.cur.Store(&s)
	return rt, nil
}

// InitialSettings builds the startup Settings from the engine's own values.
func InitialSettings(level string, limits ratelimit.Config, rules Rules) Settings {
	return Settings{LogLevel: level, RateLimits: map[string]int{
		"auth": limits.Auth, "chat": limits.Chat, "media": limits.Media, "api": limits.API, "ws": limits.Upgrade,
	}, Alerts: rules}
}

// Current returns a copy of the settings in force.
func (rt *Runtime) Current() Settings {
	s := *rt.cur.Load()
	s.RateLimits, s.Flags, s.Alerts = maps.Clone(s.RateLimits), maps.Clone(s.Flags), slices.Clone(s.Alerts)
	return s
}

// Enabled reports whether the feature flag is on (an unknown name is off).
func (rt *Runtime) Enabled(flag string) bool {
	f := rt.flags[flag]
	return f != nil && f.Load()
}

// Apply validates c against the settings in force and, only if every
// value is valid, puts it into effect and logs each change with by (who
// made it). On error nothing changes and the error lists every problem.
func (rt *Runtime) Apply(c Change, by string) (Settings, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old, next := rt.Current(), rt.Current() // each its own maps
	if c.LogLevel != nil {
		next.LogLevel = *c.LogLevel
	}
	var errs []error
	for class, v := range c.RateLimits {
		if !slices.Contains(rateClasses, class) {
			errs = append(errs, fmt.Errorf("rate_limits: unknown class %q (%s)", class, strings.Join(rateClasses, ", ")))
			continue
		}
		next.RateLimits[class] = v
	}
	for name, on := range c.Flags {
		if !knownFlag(name) {
			errs = append(errs, fmt.Errorf("flags: unknown flag %q (%s)", name, flagList()))
			continue
		}
		next.Flags[name] = on
	}
	if c.Alerts != nil {
		next.Alerts = slices.Clone(*c.Alerts)
	}
	if err := errors.Join(append(errs, next.validate())...); err != nil {
		rt.log.Warn().Str("by", by).Err(err).Msg("runtime settings change refused; nothing changed")
		return old, err
	}
	if err := rt.effect(old, next, by); err != nil {
		return rt.Current(), err
	}
	next.Changed, next.ChangedBy = time.Now().UTC(), by
	rt.cur.Store(&next)
	return rt.Current(), nil
}

// validate checks every value, listing every problem at once.
func (s Settings) validate() error {
	var errs []error
	if lvl, err := zerolog.ParseLevel(s.LogLevel); err != nil || s.LogLevel == "" || lvl > zerolog.ErrorLevel || lvl < zerolog.DebugLevel {
		errs = append(errs, fmt.Errorf("log_level %q: must be debug, info, warn or error", s.LogLevel))
	}
	if err := s.rateConfig().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.Alerts.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s Settings) rateConfig() ratelimit.Config {
	r := s.RateLimits
	return ratelimit.Config{Auth: r["auth"], Chat: r["chat"], Media: r["media"], API: r["api"], Upgrade: r["ws"]}
}

// effect puts next into effect, setting by setting, logging each change.
// The appliers cannot refuse what validate accepted; an error here is a
// bug, reported with what was applied before it.
func (rt *Runtime) effect(old, next Settings, by string) error {
	ev := func(setting string) *zerolog.Event {
		return rt.log.Info().Str("by", by).Str("setting", setting)
	}
	if next.LogLevel != old.LogLevel {
		lvl, _ := zerolog.ParseLevel(next.LogLevel)
		if rt.apply.LogLevel != nil {
			rt.apply.LogLevel(lvl)
		}
		ev("log_level").Str("from", old.LogLevel).Str("to", next.LogLevel).Msg("runtime setting changed")
	}
	if !maps.Equal(next.RateLimits, old.RateLimits) {
		if rt.apply.RateLimits != nil {
			if err := rt.apply.RateLimits(next.rateConfig()); err != nil {
				return fmt.Errorf("apply rate limits: %w", err)
			}
		}
		ev("rate_limits").Interface("from", old.RateLimits).Interface("to", next.RateLimits).Msg("runtime setting changed")
	}
	if !slices.EqualFunc(next.Alerts, old.Alerts, sameRule) {
		if rt.apply.Alerts != nil {
			if err := rt.apply.Alerts(next.Alerts); err != nil {
				return fmt.Errorf("apply alert rules: %w", err)
			}
		}
		ev("alerts").Int("rules", len(next.Alerts)).Int("were", len(old.Alerts)).Msg("runtime setting changed")
	}
	for _, name := range flagNames {
		if next.Flags[name] != old.Flags[name] {
			rt.flags[name].Store(next.Flags[name])
			ev("flags."+name).Bool("from", old.Flags[name]).Bool("to", next.Flags[name]).Msg("feature flag changed")
		}
	}
	return nil
}

// DisableFlag turns a feature flag off (the rollback an alert rule asks
// for); a flag already off is left alone.
func (rt *Runtime) DisableFlag(name, by string) error {
	if !knownFlag(name) {
		return fmt.Errorf("unknown flag %q", name)
	}
	if !rt.Enabled(name) {
		return nil
	}
	_, err := rt.Apply(Change{Flags: map[string]bool{name: false}}, by)
	return err
}

// Reload reads the settings file at path (YAML; see docs/SETTINGS.md) and
// applies it as Apply does: the keys it holds change, all or nothing.
func (rt *Runtime) Reload(path string) (Settings, error) {
	c, err := ReadChange(path)
	if err != nil {
		rt.log.Warn().Str("file", path).Err(err).Msg("runtime settings file refused; nothing changed")
		return rt.Current(), err
	}
	return rt.Apply(c, "file "+path)
}

// ReadChange parses a settings file; unknown keys are an error (a typo
// must not pass silently).
func ReadChange(path string) (Change, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Change{}, fmt.Errorf("read settings file: %w", err)
	}
	var c Change
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file changes nothing
		return Change{}, fmt.Errorf("settings file %s: %w", path, err)
	}
	return c, nil
}
