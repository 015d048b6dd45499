// Package rlimit makes room for many connections: every WebSocket is a file
// descriptor, in the bench and in an engine the bench starts (which
// inherits the bench's limit), and the common default of 1024 or a hard
// limit of 20k ends a 100k-connection run with "too many open files" in
// the middle of a ramp. Ensure raises the limit up front, or says exactly
// what to change.
package rlimit

import (
	"fmt"
	"syscall"
)

// Headroom is what a process needs beside its connections: listeners, log
// files, the store, the runtime's own descriptors.
const Headroom = 256

// Limit is RLIMIT_NOFILE after Ensure.
type Limit struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// Need is how many descriptors conns connections take in one process.
func Need(conns int) uint64 { return uint64(conns) + Headroom }

// MaxConns is how many connections fit in limit.
func MaxConns(l Limit) int {
	if l.Soft <= Headroom {
		return 0
	}
	return int(l.Soft - Headroom)
}

// Ensure raises the soft limit to the hard one (always, so that a child
// engine inherits it: Go restores the original soft limit in children
// unless the program sets it itself), and, when need is above the hard
// limit, tries to raise the hard limit too (root or CAP_SYS_RESOURCE). It
// returns the limit in effect and an error that tells the user what to do
// when need still does not fit.
func Ensure(need uint64) (Limit, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return Limit{}, fmt.Errorf("read open-files limit: %w", err)
	}
	if need > r.Max {
		want := syscall.Rlimit{Cur: need, Max: need}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			return Limit{Soft: need, Hard: need}, nil
		}
	}
	raised := syscall.Rlimit{Cur: r.Max, Max: r.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		return Limit{Soft: r.Cur, Hard: r.Max}, fmt.Errorf("raise open-files limit from %d to %d: %w", r.Cur, r.Max, err)
	}
	l := Limit{Soft: r.Max, Hard: r.Max}
	if need > l.Soft {
		return l, fmt.Errorf("open-files limit too low: this run needs %d descriptors (connections + %d) in the bench "+
			"and as many in the engine, but the hard limit is %d and could not be raised; "+
			"raise it (as root: `ulimit -Hn %d`, systemd LimitNOFILE=, or /etc/security/limits.conf) "+
			"or lower --conns to %d", need, Headroom, l.Hard, need, MaxConns(l))
	}
	return l, nil
}
