package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"charla/transport"
)

// source is where a setting's value came from; the later in this list, the
// stronger: a flag beats the environment, which beats the config file,
// which beats the profile, which beats the built-in default.
type source string

const (
	sourceDefault source = "default"
	sourceProfile source = "profile"
	sourceFile    source = "file"
	sourceEnv     source = "env"
	sourceFlag    source = "flag"
)

// layer is a set of values from one source below the environment.
type layer struct {
	source source
	values []keyValue
}

// keyValue is one setting of a layer; where names it in a problem ("config
// charla.yaml line 4").
type keyValue struct {
	name, value, where string
}

// profiles are the defaults each environment starts from. Only what must
// differ between environments is here; the rules that go with them are in
// profileProblems.
var profiles = map[string][]keyValue{
	"development": {{name: "auth-mode", value: transport.AuthDev}, {name: "log-format", value: "console"}, {name: "log-level", value: "debug"}},
	"staging":     {{name: "auth-mode", value: transport.AuthJWT}, {name: "log-format", value: "json"}},
	"production":  {{name: "auth-mode", value: transport.AuthJWT}, {name: "log-format", value: "json"}, {name: "log-level", value: "info"}},
}

// layers reads the config file (--config, CHARLA_CONFIG) and the chosen
// profile's defaults (--profile, CHARLA_PROFILE, or the file's profile key).
// Both must be known before the settings are parsed, since every flag and
// variable goes over them.
func (fs flagSet) layers(args []string, getenv func(string) string) ([]layer, error) {
	var errs []error
	var file []keyValue
	if path := peek(args, getenv, "config", "CHARLA_CONFIG"); path != "" {
		var err error
		if file, err = readConfigFile(path); err != nil {
			errs = append(errs, err)
		}
	}
	profile := peek(args, getenv, "profile", "CHARLA_PROFILE")
	for _, kv := range file {
		if kv.name == "profile" && profile == "" {
			profile = kv.value
		}
	}
	var out []layer
	if profile != "" {
		p, ok := profiles[profile]
		if !ok {
			errs = append(errs, fmt.Errorf("profile %q: must be development, staging or production", profile))
		}
		out = append(out, layer{source: sourceProfile, values: p})
	}
	return append(out, layer{source: sourceFile, values: file}), errors.Join(errs...)
}

// peek finds a setting the others depend on before the full parse: the last
// --name on the command line, else the environment variable.
func peek(args []string, getenv func(string) string, name, env string) string {
	val := ""
	for i := 0; i < len(args); i++ {
		n, v, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") || n != name {
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			v = args[i]
		}
		val = v
	}
	if val == "" && getenv != nil {
		val = getenv(env)
	}
	return val
}

// readConfigFile reads a YAML mapping of flag names to values: a scalar, or
// a list for a comma-separated setting. Every problem of the file is listed
// (with its line), none stops the reading of the others.
func readConfigFile(path string) ([]keyValue, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s: must be a mapping of setting names (the flags' names) to values", path)
	}
	var out []keyValue
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		where := fmt.Sprintf("config %s line %d", path, k.Line)
		value, err := scalarOrList(v)
		switch {
		case k.Value == "config":
			errs = append(errs, fmt.Errorf("%s: config cannot name another file", where))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %s: %v", where, k.Value, err))
		default:
			out = append(out, keyValue{name: k.Value, value: value, where: where})
		}
	}
	return out, errors.Join(errs...)
}

// scalarOrList is a YAML value as a flag's text: a list is joined with
// commas, as the environment variable would carry it.
func scalarOrList(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		var items []string
		for _, it := range n.Content {
			if it.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("line %d: a list of plain values is expected", it.Line)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), nil
	default:
		return "", errors.New("must be a single value or a list, not a mapping")
	}
}

// profileProblems are the rules of the chosen profile. Staging and
// production refuse dev auth; production also wants the browser origins
// named and a JWT secret nobody guesses (a warning elsewhere).
func (c config) profileProblems() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("profile %s: "+format, append([]any{c.Profile}, args...)...))
	}
	switch c.Profile {
	case "staging", "production":
		if c.Transport.Auth.Mode == transport.AuthDev {
			bad("auth-mode dev is refused (anyone could connect as anyone): use jwt")
		}
	}
	if c.Profile != "production" {
		return errs
	}
	if len(c.Transport.Origins) == 0 || slices.Contains(c.Transport.Origins, "*") {
		bad("allowed-origins must name the browser origins of the agent panel explicitly (not empty, not *)")
	}
	if c.Transport.Auth.Mode == transport.AuthJWT && len(c.Transport.Auth.Secret) > 0 {
		if bits := entropyBits(c.Transport.Auth.Secret); bits < 128 {
			bad("jwt-secret is too weak (about %.0f bits of entropy, 128 or more needed): use a random one, e.g. `openssl rand -base64 48`", bits)
		}
	}
	return errs
}

// shown is a setting's value as check-config and --help print it: secrets
// masked; a database URL keeps everything but its password, which is what
// an operator checks.
func (s setting) shown() string {
	v := s.value.String()
	if !s.secret || v == "" {
		return v
	}
	if s.dbField == "URL" {
		if u, err := url.Parse(v); err == nil && u.Scheme != "" {
			return u.Redacted()
		}
	}
	return "(set; not shown)"
}

// effective is each setting's value (as shown) and source, in the flags'
// order: check-config's report, taken right after parsing.
func (fs flagSet) effective(from map[string]source) []effectiveSetting {
	out := make([]effectiveSetting, 0, len(fs))
	for _, s := range fs {
		src, ok := from[s.name]
		if !ok {
			src = sourceDefault
		}
		out = append(out, effectiveSetting{name: s.name, source: src, value: s.shown()})
	}
	return out
}

type effectiveSetting struct {
	name   string
	source source
	value  string
}

// printEffective is check-config's report.
func (c config) printEffective(w io.Writer) {
	profile := c.Profile
	if profile == "" {
		profile = "(none)"
	}
	fmt.Fprintf(w, "profile: %s\n", profile)
	fmt.Fprintf(w, "%-32s %-8s %s\n", "setting", "source", "value")
	for _, e := range c.effective {
		fmt.Fprintf(w, "%-32s %-8s %s\n", e.name, e.source, e.value)
	}
}
