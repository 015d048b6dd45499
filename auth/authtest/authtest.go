// Package authtest is the conformance suite of auth.AgentStore: every store
// that keeps agents runs it, so that login behaves the same on each.
package authtest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/auth"
)

// Run runs the suite; open returns an empty store for one subtest (the
// caller closes it, with t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) auth.AgentStore) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s auth.AgentStore)
	}{
		{"Agents", testAgents},
		{"DisableRevokesTokens", testDisable},
		{"RefreshRotation", testRefresh},
		{"ConcurrentUseSpendsOnce", testConcurrentUse},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
	}
}

// Agent returns a valid agent of email with a placeholder hash.
func Agent(email string, role charla.Role) auth.Agent {
	return auth.Agent{ID: uuid.NewString(), Email: email, Name: "Name of " + email, PasswordHash: "$argon2id$placeholder",
		Role: role, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
}

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func testAgents(t *testing.T, s auth.AgentStore) {
	ctx := t.Context()
	bob, ann := Agent("bob@example.com", charla.RoleAgent), Agent("ann@example.com", charla.RoleAdmin)
	for _, a := range []auth.Agent{bob, ann} {
		if err := s.AddAgent(ctx, a); err != nil {
			t.Fatalf("AddAgent %s: %v", a.Email, err)
		}
	}
	dup := Agent("bob@example.com", charla.RoleAgent)
	if err := s.AddAgent(ctx, dup); !errors.Is(err, auth.ErrAgentExists) {
		t.Fatalf("AddAgent of a taken e-mail = %v, want ErrAgentExists", err)
	}
	for _, tc := range []struct {
		name string
		get  func() (auth.Agent, error)
		want auth.Agent
		err  error
	}{
		{"by email", func() (auth.Agent, error) { return s.GetAgentByEmail(ctx, "bob@example.com") }, bob, nil},
		{"by id", func() (auth.Agent, error) { return s.GetAgent(ctx, ann.ID) }, ann, nil},
		{"unknown email", func() (auth.Agent, error) { return s.GetAgentByEmail(ctx, "eve@example.com") }, auth.Agent{}, auth.ErrAgentNotFound},
		{"unknown id", func() (auth.Agent, error) { return s.GetAgent(ctx, uuid.NewString()) }, auth.Agent{}, auth.ErrAgentNotFound},
	} {
		got, err := tc.get()
		if !errors.Is(err, tc.err) || err == nil && !same(got, tc.want) {
			t.Errorf("%s = %+v, %v; want %+v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
	list, err := s.ListAgents(ctx)
	if err != nil || len(list) != 2 || !same(list[0], ann) || !same(list[1], bob) {
		t.Fatalf("ListAgents = %+v, %v; want ann then bob", list, err)
	}
}

func same(a, b auth.Agent) bool {
	return a.ID == b.ID && a.Email == b.Email && a.Name == b.Name && a.PasswordHash == b.PasswordHash &&
		a.Role == b.Role && a.Disabled == b.Disabled && a.CreatedAt.Equal(b.CreatedAt)
}

func testDisable(t *testing.T, s auth.AgentStore) {
	ctx := t.Context()
	a := Agent("carl@example.com", charla.RoleAgent)
	if err := s.AddAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	tok := auth.RefreshToken{Hash: hashOf("carl-1"), Family: uuid.NewString(), AgentID: a.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateRefresh(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableAgent(ctx, "carl@example.com"); err != nil {
		t.Fatalf("DisableAgent: %v", err)
	}
	if err := s.DisableAgent(ctx, "nobody@example.com"); !errors.Is(err, auth.ErrAgentNotFound) {
		t.Fatalf("DisableAgent of nobody = %v, want ErrAgentNotFound", err)
	}
	got, err := s.GetAgentByEmail(ctx, "carl@example.com")
	if err != nil || !got.Disabled {
		t.Fatalf("after DisableAgent: %+v, %v", got, err)
	}
	if rt, err := s.UseRefresh(ctx, tok.Hash); err != nil || !rt.Spent {
		t.Fatalf("a disabled agent's token: %+v, %v; want spent", rt, err)
	}
}

func testRefresh(t *testing.T, s auth.AgentStore) {
	ctx := t.Context()
	a := Agent("dora@example.com", charla.RoleAgent)
	if err := s.AddAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	fam, other := uuid.NewString(), uuid.NewString()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	for i, f := range []string{fam, fam, other} {
		if err := s.CreateRefresh(ctx, auth.RefreshToken{Hash: hashOf(fmt.Sprint(i)), Family: f, AgentID: a.ID, ExpiresAt: exp}); err != nil {
			t.Fatalf("CreateRefresh %d: %v", i, err)
		}
	}
	steps := []struct {
		name  string
		do    func() (auth.RefreshToken, error)
		spent bool
		err   error
	}{
		{"first use", func() (auth.RefreshToken, error) { return s.UseRefresh(ctx, hashOf("0")) }, false, nil},
		{"second use", func() (auth.RefreshToken, error) { return s.UseRefresh(ctx, hashOf("0")) }, true, nil},
		{"unknown", func() (auth.RefreshToken, error) { return s.UseRefresh(ctx, hashOf("x")) }, false, auth.ErrRefreshNotFound},
		{"sibling after revoke", func() (auth.RefreshToken, error) {
			if err := s.RevokeFamily(ctx, fam); err != nil {
				return auth.RefreshToken{}, err
			}
			return s.UseRefresh(ctx, hashOf("1"))
		}, true, nil},
		{"other family", func() (auth.RefreshToken, error) { return s.UseRefresh(ctx, hashOf("2")) }, false, nil},
	}
	for _, st := range steps {
		rt, err := st.do()
		if !errors.Is(err, st.err) {
			t.Fatalf("%s: err %v, want %v", st.name, err, st.err)
		}
		if err != nil {
			continue
		}
		if rt.Spent != st.spent || rt.AgentID != a.ID || !rt.ExpiresAt.Equal(exp) || rt.Family != fam && rt.Family != other || len(rt.Hash) != sha256.Size {
			t.Fatalf("%s: %+v, want spent=%v of %s expiring %s", st.name, rt, st.spent, a.ID, exp)
		}
	}
}

func testConcurrentUse(t *testing.T, s auth.AgentStore) {
	ctx := context.Background()
	a := Agent("eli@example.com", charla.RoleAgent)
	if err := s.AddAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	h := hashOf("race")
	if err := s.CreateRefresh(ctx, auth.RefreshToken{Hash: h, Family: uuid.NewString(), AgentID: a.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var fresh, spent atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			rt, err := s.UseRefresh(ctx, h)
			switch {
			case err != nil:
				t.Errorf("UseRefresh: %v", err)
			case rt.Spent:
				spent.Add(1)
			default:
				fresh.Add(1)
			}
		})
	}
	wg.Wait()
	if fresh.Load() != 1 || spent.Load() != 7 {
		t.Fatalf("8 concurrent uses: %d fresh, %d spent; want 1 and 7", fresh.Load(), spent.Load())
	}
}
