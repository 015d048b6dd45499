// Package pin puts the engine and the load generator on separate cores, the
// way the performance goals are measured (DESIGN.md: the engine pinned to
// one core with GOMAXPROCS=1, the load on the other), so that the load never
// steals the engine's CPU and peers are compared on the same footing.
//
// The engine is pinned with taskset(1) from util-linux, which sets the CPU
// affinity before the engine's first instruction, so that every thread the
// Go runtime starts inherits it. The bench pins itself with
// sched_setaffinity(2) on each of its threads.
package pin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseCPUs reads a CPU list as taskset -c takes it ("0", "1-3", "0,2-3")
// and returns the CPUs, sorted and without repeats.
func ParseCPUs(list string) ([]int, error) {
	var cpus []int
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return nil, fmt.Errorf("CPU list %q: bad element %q (want e.g. 0, 1-3 or 0,2)", list, part)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

// Command returns cmdline run under taskset -c on cpus with GOMAXPROCS set
// to their number (unless cmdline sets GOMAXPROCS itself). Leading VAR=value
// words of cmdline stay in front, so that the shell still reads them as
// assignments. taskset execs the engine, so the engine keeps the PID the
// shell started (the bench reads its memory and CPU from /proc/PID).
func Command(cmdline string, cpus []int) (string, error) {
	if len(cpus) == 0 {
		return "", errors.New("pin: no CPUs for the engine")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "", fmt.Errorf("pin: the engine is pinned with taskset (util-linux): %w", err)
	}
	words := strings.Fields(cmdline)
	i := 0
	ownProcs := false
	for i < len(words) && isAssignment(words[i]) {
		ownProcs = ownProcs || strings.HasPrefix(words[i], "GOMAXPROCS=")
		i++
	}
	env := slices.Clone(words[:i])
	if !ownProcs {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", len(cpus)))
	}
	out := append(env, "taskset", "-c", List(cpus))
	return strings.Join(append(out, words[i:]...), " "), nil
}

// isAssignment reports whether a shell word is a VAR=value assignment.
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// List writes cpus as a comma-separated list, the form taskset -c takes.
func List(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// Self pins every thread of this process to cpus and sets GOMAXPROCS to
// their number. A thread inherits the affinity of the thread that creates
// it, so once every existing thread is pinned, later ones are too; the loop
// goes over the threads until a pass finds none it had not pinned, which
// covers a thread started during the previous pass.
func Self(cpus []int) error {
	if len(cpus) == 0 {
		return errors.New("pin: no CPUs for the load")
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	pinned := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin: list threads: %w", err)
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pin: thread %d to CPUs %s: %w", tid, List(cpus), err)
			}
			pinned[tid] = true
			fresh++
		}
		if fresh == 0 {
			runtime.GOMAXPROCS(len(cpus))
			return nil
		}
	}
	return errors.New("pin: threads kept appearing while pinning")
}
