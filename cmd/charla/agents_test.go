package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"charla/store/postgres"
	"charla/store/postgres/pgtest"
)

// `charla agents add|list|disable` work on both stores, and refuse what
// they should.
func TestAgentsSubcommand(t *testing.T) {
	for _, storeKind := range []string{"embedded", "postgres"} {
		t.Run(storeKind, func(t *testing.T) {
			where := []string{"--data-dir", t.TempDir()}
			if storeKind == "postgres" {
				u := pgtest.SchemaURL(t)
				if _, err := postgres.MigrateURL(t.Context(), u); err != nil {
					t.Fatal(err)
				}
				where = []string{"--database-url", u}
			}
			for _, step := range []struct {
				args  []string
				stdin string
				code  int
				out   string
			}{
				{[]string{"add", "--email", "Ana@Example.com", "--name", "Ana", "--role", "admin"}, "correct horse\n", 0, "added admin ana@example.com"},
				{[]string{"add", "--email", "ana@example.com", "--name", "Ana"}, "another password\n", 1, "exists"},
				{[]string{"add", "--email", "bo@example.com", "--name", "Bo"}, "short\n", 1, "password must be"},
				{[]string{"add", "--email", "bo@example.com", "--name", "Bo", "--role", "customer"}, "long enough\n", 2, "must be agent or admin"},
				{[]string{"add", "--email", "bo@example.com", "--name", "Bo"}, "long enough", 0, "added agent bo@example.com"},
				{[]string{"disable", "--email", "BO@example.com"}, "", 0, "disabled bo@example.com"},
				{[]string{"disable", "--email", "nobody@example.com"}, "", 1, "no such agent"},
				{[]string{"list"}, "", 0, "ana@example.com"},
				{[]string{"frobnicate"}, "", 2, "unknown command"},
			} {
				var out, errOut bytes.Buffer
				args := append(append([]string{}, step.args...), where...)
				code := agents(context.Background(), args, strings.NewReader(step.stdin), &out, &errOut, func(string) string { return "" })
				if code != step.code || !strings.Contains(out.String()+errOut.String(), step.out) {
					t.Fatalf("agents %v = %d\n%s%s\nwant %d and %q", step.args, code, out.String(), errOut.String(), step.code, step.out)
				}
				if step.args[0] == "list" && (!strings.Contains(strings.Join(strings.Fields(out.String()), " "), "bo@example.com Bo agent disabled") || strings.Index(out.String(), "ana@") > strings.Index(out.String(), "bo@")) {
					t.Fatalf("list:\n%s", out.String())
				}
			}
		})
	}
}
