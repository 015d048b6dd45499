package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/auth"
	"charla/media"
	"charla/store"
	"charla/store/postgres"
)

// mediaDir is where uploads live under the data dir (package media).
const mediaDir = "media"

// openLogin builds serve's login service over st, when st keeps agents (both
// stores do), and the media store under the data dir.
func openLogin(cfg config, st store.Store) (*auth.Service, *media.Store, error) {
	var svc *auth.Service
	if as, ok := st.(auth.AgentStore); ok {
		var err error
		if svc, err = auth.NewService(cfg.Login, as); err != nil {
			return nil, nil, fmt.Errorf("login: %w", err)
		}
	}
	ms, err := media.Open(filepath.Join(cfg.DataDir, mediaDir))
	if err != nil {
		return nil, nil, err
	}
	return svc, ms, nil
}

// agents is `charla agents add|list|disable`, on PostgreSQL when a database
// URL is set, else on the embedded store under --data-dir (which a running
// engine holds locked: stop it first).
func agents(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	const use = "usage: charla agents add --email E --name N [--role agent|admin] [--password-file F] | list | disable --email E\n"
	if len(args) == 0 {
		fmt.Fprint(stderr, use)
		return 2
	}
	cmd := args[0]
	var dataDir, dbURL, email, name, role, pwFile string
	fs := flagSet{
		{name: "data-dir", env: "CHARLA_DATA_DIR", usage: "directory of the embedded store", value: strVar(&dataDir, "./data")},
		{name: "database-url", env: "DATABASE_URL", usage: "PostgreSQL URL; empty = embedded store", value: strVar(&dbURL, ""), secret: true},
	}
	switch cmd {
	case "add":
		fs = append(fs,
			setting{name: "email", usage: "the agent's e-mail, its login (required)", value: strVar(&email, "")},
			setting{name: "name", usage: "the agent's display name (required)", value: strVar(&name, "")},
			setting{name: "role", usage: "agent or admin", value: strVar(&role, string(charla.RoleAgent))},
			setting{name: "password-file", usage: "file whose first line is the password; default: the first line of standard input", value: strVar(&pwFile, "")})
	case "disable":
		fs = append(fs, setting{name: "email", usage: "the agent's e-mail (required)", value: strVar(&email, "")})
	case "list":
	default:
		fmt.Fprintf(stderr, "charla agents: unknown command %q\n%s", cmd, use)
		return 2
	}
	err := fs.parse(args[1:], getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	errs := flatten(err)
	if cmd != "list" && email == "" {
		errs = append(errs, errors.New("--email is required"))
	}
	if cmd == "add" && name == "" {
		errs = append(errs, errors.New("--name is required"))
	}
	if cmd == "add" && role != string(charla.RoleAgent) && role != string(charla.RoleAdmin) {
		errs = append(errs, fmt.Errorf("--role %q: must be agent or admin", role))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "charla agents %s:\n%s\n", cmd, indent(err))
		return 2
	}
	st, closeStore, err := openAgentStore(ctx, dataDir, dbURL)
	if err != nil {
		fmt.Fprintf(stderr, "charla agents: %v\n", err)
		return 1
	}
	defer closeStore()
	switch cmd {
	case "add":
		password, err := readPassword(pwFile, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "charla agents add: %v\n", err)
			return 2
		}
		svc, err := auth.NewService(auth.DefaultConfig(), st)
		if err == nil {
			var a auth.Agent
			if a, err = svc.AddAgent(ctx, email, name, charla.Role(role), password); err == nil {
				fmt.Fprintf(stdout, "added %s %s (%s)\n", a.Role, a.Email, a.ID)
				return 0
			}
		}
		fmt.Fprintf(stderr, "charla agents add: %v\n", err)
		return 1
	case "disable":
		if err := st.DisableAgent(ctx, auth.NormalizeEmail(email)); err != nil {
			fmt.Fprintf(stderr, "charla agents disable: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "disabled %s; its refresh tokens are revoked (access tokens expire within --access-token-ttl)\n", auth.NormalizeEmail(email))
		return 0
	}
	list, err := st.ListAgents(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "charla agents list: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tNAME\tROLE\tSTATE\tID\tCREATED")
	for _, a := range list {
		state := "active"
		if a.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Email, a.Name, a.Role, state, a.ID, a.CreatedAt.Format(time.RFC3339))
	}
	_ = tw.Flush()
	return 0
}

// readPassword reads the first line of path, or of stdin when path is "":
// never a flag, which would land in shell history and ps.
func readPassword(path string, stdin io.Reader) (string, error) {
	r := stdin
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// agentStore is what `charla agents` needs of a store: agents, and Close.
type agentStore interface {
	auth.AgentStore
	Close() error
}

// openAgentStore opens PostgreSQL (whose schema must be current) or the
// embedded store.
func openAgentStore(ctx context.Context, dataDir, dbURL string) (agentStore, func(), error) {
	if dbURL == "" {
		st, err := openEmbedded(ctx, dataDir, zerolog.Nop())
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	}
	opts := postgres.DefaultOptions()
	opts.URL, opts.MaxConns, opts.MinConns = dbURL, 2, 0
	st, err := postgres.Open(ctx, opts, zerolog.Nop())
	if err != nil {
		return nil, nil, fmt.Errorf("open database: %w", err)
	}
	return st, func() { _ = st.Close() }, nil
}
