package pebble

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"charla"
)

// The kill loop's child process is this test binary run again with
// crashChildEnv set to the store directory (TestMain diverts it to
// crashChild) and crashRoundEnv to the round, which keeps client ids of
// different rounds apart.
const (
	crashChildEnv = "CHARLA_PEBBLE_CRASH_CHILD"
	crashRoundEnv = "CHARLA_PEBBLE_CRASH_ROUND"
)

// Shape of the child's load: crashWriters goroutines, each the single writer
// of crashConvsPerWriter conversations, as conversation actors would be.
const (
	crashWriters        = 4
	crashConvsPerWriter = 4
)

// crashConv names the conversations of the kill loop. Writer 0's first one is
// "c", a prefix of every other name, so that key isolation is exercised too.
func crashConv(w, c int) charla.ConvID {
	if w == 0 && c == 0 {
		return "c"
	}
	return charla.ConvID(fmt.Sprintf("c%d", w*crashConvsPerWriter+c))
}

// crashChild appends until killed, printing one line per acked new message,
// "<conv> <client_msg_id> <seq>", written after Append returned. It checks
// the answers to its own resends and exits 2 on a wrong one.
func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	round := os.Getenv(crashRoundEnv)
	o := DefaultOptions()
	o.LockTimeout = 10 * time.Second
	o.MemTableSize = 256 << 10 // flushes (and their crash windows) happen too
	s, err := Open(context.Background(), dir, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	var out sync.Mutex
	fail := make(chan string, crashWriters)
	for w := range crashWriters {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			type acked struct {
				conv charla.ConvID
				id   string
				seq  charla.Seq
			}
			var mine []acked
			body := []byte(`{"text":"` + strings.Repeat("hola ", 40) + `"}`)
			for n := 0; ; {
				batch := make([]charla.Message, 1+rng.IntN(16))
				for i := range batch {
					n++
					batch[i] = charla.Message{
						Conv:        crashConv(w, rng.IntN(crashConvsPerWriter)),
						ClientMsgID: fmt.Sprintf("r%s-w%d-%d", round, w, n),
						Sender:      charla.Sender{ID: "u", Role: charla.RoleCustomer},
						Body:        body,
					}
				}
				var resent *acked
				if len(mine) > 0 && rng.IntN(4) == 0 {
					resent = &mine[rng.IntN(len(mine))]
					batch = append(batch, charla.Message{Conv: resent.conv, ClientMsgID: resent.id, Body: body})
				}
				res, err := s.Append(context.Background(), batch)
				if err != nil {
					fail <- fmt.Sprintf("append: %v", err)
					return
				}
				var lines bytes.Buffer
				for i, r := range res {
					m := batch[i]
					if resent != nil && i == len(batch)-1 {
						if !r.Duplicate || r.Seq != resent.seq {
							fail <- fmt.Sprintf("resend of %s %s: seq %d duplicate %v, want seq %d duplicate", m.Conv, m.ClientMsgID, r.Seq, r.Duplicate, resent.seq)
							return
						}
						continue
					}
					mine = append(mine, acked{m.Conv, m.ClientMsgID, r.Seq})
					fmt.Fprintf(&lines, "%s %s %d\n", m.Conv, m.ClientMsgID, r.Seq)
				}
				out.Lock()
				_, err = os.Stdout.Write(lines.Bytes())
				out.Unlock()
				if err != nil {
					fail <- fmt.Sprintf("stdout: %v", err)
					return
				}
			}
		}()
	}
	fmt.Fprintln(os.Stderr, "child:", <-fail)
	return 2
}

// ack is one acked message as the child printed it.
type ack struct {
	conv charla.ConvID
	id   string
	seq  charla.Seq
}

// runCrashChild starts a child on dir and kills it (SIGKILL) at a random
// moment: during Open and WAL replay in some rounds, a few milliseconds into
// its appends in the others. It returns the acks the child printed.
func runCrashChild(t *testing.T, dir string, round int, rng *rand.Rand) []ack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acks []ack
	firstAck := make(chan struct{})
	parsed := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			// bufio.Scanner only returns whole lines but for the last one
			// of the stream: a line cut by the kill has too few fields or
			// a cut number, and is not an ack the client received.
			f := strings.Fields(sc.Text())
			if len(f) != 3 || !strings.HasSuffix(sc.Text(), f[2]) {
				continue
			}
			seq, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				continue
			}
			if len(acks) == 0 {
				close(firstAck)
			}
			acks = append(acks, ack{charla.ConvID(f[0]), f[1], charla.Seq(seq)})
		}
		if len(acks) == 0 {
			close(firstAck)
		}
		parsed <- sc.Err()
	}()
	if round%5 == 4 {
		// Kill during start-up: Open, WAL replay, the first appends.
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
	} else {
		select {
		case <-firstAck:
		case <-time.After(30 * time.Second):
			t.Errorf("round %d: no ack from the child in 30 s; stderr:\n%s", round, stderr.String())
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	if err := <-parsed; err != nil {
		t.Errorf("round %d: reading the child's acks: %v", round, err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child ended by itself (%v), not by the kill; stderr:\n%s", round, err, stderr.String())
	}
	return acks
}

// checkCrashStore opens dir and checks it against every ack so far: each
// acked message present with its acked seq, every conversation's seqs
// 1..head with no gap and no repeated client id, and a resend of acked
// messages answered as a duplicate with the original seq. It returns the
// number of messages in the store.
func checkCrashStore(t *testing.T, dir string, acks []ack, resend []ack) int {
	t.Helper()
	s := open(t, dir)
	defer s.Close()
	ctx := t.Context()
	stored := map[charla.ConvID]map[string]charla.Seq{}
	total := 0
	for w := range crashWriters {
		for c := range crashConvsPerWriter {
			conv := crashConv(w, c)
			msgs, err := s.Range(ctx, conv, 0, 1<<30)
			if err != nil {
				t.Fatalf("Range(%s): %v", conv, err)
			}
			ids := map[string]charla.Seq{}
			for i, m := range msgs {
				if m.Seq != charla.Seq(i+1) {
					t.Fatalf("%s: message %d has seq %d: a gap or a duplicate seq", conv, i, m.Seq)
				}
				if prev, ok := ids[m.ClientMsgID]; ok {
					t.Fatalf("%s: client id %s stored twice, at seqs %d and %d", conv, m.ClientMsgID, prev, m.Seq)
				}
				ids[m.ClientMsgID] = m.Seq
			}
			if h, err := s.Head(ctx, conv); err != nil || h != charla.Seq(len(msgs)) {
				t.Fatalf("Head(%s) = %d, %v; want %d", conv, h, err, len(msgs))
			}
			stored[conv] = ids
			total += len(msgs)
		}
	}
	for _, a := range acks {
		if got, ok := stored[a.conv][a.id]; !ok || got != a.seq {
			t.Fatalf("acked %s %s seq %d: stored at seq %d (present %v)", a.conv, a.id, a.seq, got, ok)
		}
	}
	if len(resend) > 0 {
		batch := make([]charla.Message, len(resend))
		for i, a := range resend {
			batch[i] = charla.Message{Conv: a.conv, ClientMsgID: a.id, Body: []byte(`{"text":"resent"}`)}
		}
		res, err := s.Append(ctx, batch)
		if err != nil {
			t.Fatalf("resend of %d acked messages: %v", len(batch), err)
		}
		for i, r := range res {
			if !r.Duplicate || r.Seq != resend[i].seq {
				t.Fatalf("resend of acked %s %s: seq %d duplicate %v, want seq %d duplicate", resend[i].conv, resend[i].id, r.Seq, r.Duplicate, resend[i].seq)
			}
		}
	}
	return total
}

// TestKillLoop kills a child process appending under load (SIGKILL, at
// random moments) again and again, reopening the store after each kill: no
// acked message may be lost or move, seqs must stay contiguous, and acked
// client ids must still be recognised. A kill loses what the process had not
// written to the kernel; TestPowerLoss covers what the kernel had not synced.
func TestKillLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("kill loop skipped in -short mode")
	}
	const (
		minKills = 20
		maxKills = 40
		budget   = 30 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := filepath.Join(t.TempDir(), "charla.pebble")
	start := time.Now()
	var all []ack
	kills, stored := 0, 0
	for kills < maxKills && (kills < minKills || time.Since(start) < budget) {
		acks := runCrashChild(t, dir, kills, rng)
		kills++
		all = append(all, acks...)
		// Resend this round's acks and a sample of older ones.
		resend := slices.Clone(acks)
		for range min(50, len(all)) {
			resend = append(resend, all[rng.IntN(len(all))])
		}
		stored = checkCrashStore(t, dir, all, resend)
		if t.Failed() {
			return
		}
	}
	if kills < minKills {
		t.Errorf("only %d kills in %v, want at least %d", kills, time.Since(start), minKills)
	}
	t.Logf("%d kills in %v: %d messages acked, all verified; %d stored (acked or committed before the kill)",
		kills, time.Since(start).Round(time.Millisecond), len(all), stored)
}

// walFiles returns the WAL files of the store in dir, oldest first.
func walFiles(t *testing.T, dir string) []string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(logs) // zero-padded file numbers: name order is age order
	return logs
}

// copyDir copies the regular files of src into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// tornBatch is message i of batch k of the torn-tail test: each batch writes
// two messages to x and one to y.
func tornBatch(k int) []charla.Message {
	m := func(conv charla.ConvID, i int) charla.Message {
		return charla.Message{Conv: conv, ClientMsgID: fmt.Sprintf("b%03d-%d", k, i),
			Body: []byte(fmt.Sprintf(`{"text":"batch %d message %d %s"}`, k, i, strings.Repeat("x", 100)))}
	}
	return []charla.Message{m("x", 0), m("y", 1), m("x", 2)}
}

// TestTornTail damages the end of the WAL after a clean run, as a crash in
// the middle of a write (or a disk that lost the last sectors) would, and
// reopens: the store must open, keep a prefix of the batches with no half of
// a batch (a message without its dedup entry or the reverse), and resume
// sequencing right after what it kept.
func TestTornTail(t *testing.T) {
	const batches = 40
	dir := t.TempDir()
	s := open(t, dir)
	for k := range batches {
		if _, err := s.Append(t.Context(), tornBatch(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs := walFiles(t, dir)
	if len(logs) == 0 {
		t.Fatal("no WAL file after a clean run")
	}
	wal := filepath.Base(logs[len(logs)-1])
	fi, err := os.Stat(logs[len(logs)-1])
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	tests := []struct {
		name   string
		damage func(f *os.File) error
		lost   bool // whether some batch must be gone
	}{
		{"Intact", func(*os.File) error { return nil }, false},
		{"Truncate1", func(f *os.File) error { return f.Truncate(size - 1) }, false},
		{"Truncate100", func(f *os.File) error { return f.Truncate(size - 100) }, true},
		{"Truncate1KiB", func(f *os.File) error { return f.Truncate(size - 1024) }, true},
		{"FlipLastBytes", func(f *os.File) error { _, err := f.WriteAt([]byte{0xde, 0xad}, size-2); return err }, false},
		{"ZeroLast300", func(f *os.File) error { _, err := f.WriteAt(make([]byte, 300), size-300); return err }, true},
		{"GarbageAppended", func(f *os.File) error {
			_, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), size)
			return err
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := copyDir(t, dir)
			f, err := os.OpenFile(filepath.Join(d, wal), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = tt.damage(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			kept := checkTornStore(t, d, batches)
			t.Logf("%d of %d batches kept", kept, batches)
			if tt.lost && kept == batches {
				t.Errorf("every batch kept: the damage did not reach a record, the test proves nothing")
			}
			if kept < batches-20 {
				t.Errorf("only %d of %d batches kept after damage to the last bytes", kept, batches)
			}
		})
	}
}

// checkTornStore opens the store in dir and returns how many of the batches
// of tornBatch survived, failing unless they are a prefix, each whole
// (messages and dedup entries), and sequencing resumes after them.
func checkTornStore(t *testing.T, dir string, batches int) int {
	t.Helper()
	s := open(t, dir)
	defer s.Close()
	ctx := t.Context()
	present := map[string]charla.Seq{}
	for _, conv := range []charla.ConvID{"x", "y"} {
		msgs, err := s.Range(ctx, conv, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range msgs {
			if m.Seq != charla.Seq(i+1) {
				t.Fatalf("%s: message %d has seq %d", conv, i, m.Seq)
			}
			present[string(conv)+"/"+m.ClientMsgID] = m.Seq
		}
	}
	kept := 0
	for k := range batches {
		n := 0
		for _, m := range tornBatch(k) {
			if _, ok := present[string(m.Conv)+"/"+m.ClientMsgID]; ok {
				n++
			}
		}
		switch {
		case n == 3 && kept == k:
			kept++
		case n == 0:
		default:
			t.Fatalf("batch %d: %d of its 3 messages present (batches kept before it: %d): not a prefix of whole batches", k, n, kept)
		}
	}
	// Resend every batch: the kept ones are duplicates with their seqs (their
	// dedup entries survived with them), the lost ones are new, and continue
	// each conversation with no gap (no dedup entry survived without its
	// message).
	var all []charla.Message
	for k := range batches {
		all = append(all, tornBatch(k)...)
	}
	res, err := s.Append(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	next := map[charla.ConvID]charla.Seq{"x": charla.Seq(2*kept + 1), "y": charla.Seq(kept + 1)}
	for i, r := range res {
		m := all[i]
		if seq, ok := present[string(m.Conv)+"/"+m.ClientMsgID]; ok {
			if !r.Duplicate || r.Seq != seq {
				t.Fatalf("resend of kept %s %s: seq %d duplicate %v, want duplicate of seq %d", m.Conv, m.ClientMsgID, r.Seq, r.Duplicate, seq)
			}
			continue
		}
		if r.Duplicate || r.Seq != next[m.Conv] {
			t.Fatalf("resend of lost %s %s: seq %d duplicate %v, want new at seq %d", m.Conv, m.ClientMsgID, r.Seq, r.Duplicate, next[m.Conv])
		}
		next[m.Conv]++
	}
	return kept
}

// TestWALCorruptionBeforeTailRefused pins the other side of tolerating a torn
// tail: damage in the middle of the WAL, followed by intact records, is
// corruption of acked data, and Open must refuse it rather than silently
// open without those messages.
func TestWALCorruptionBeforeTailRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for k := range 200 {
		if _, err := s.Append(t.Context(), tornBatch(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs := walFiles(t, dir)
	wal := logs[len(logs)-1]
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(wal, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("CORRUPT!"), fi.Size()/2)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), dir, testOptions(t)); err == nil {
		s.Close()
		t.Fatal("Open of a WAL corrupted in the middle succeeded")
	} else {
		t.Logf("Open: %v", err)
	}
}

// TestPowerLoss simulates losing power while appends are in flight: pebble's
// crashable memory file system keeps what was synced and a random part of
// what was not. Every message acked before the crash must be in the crashed
// copy, whole, and sequencing must continue from it.
func TestPowerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := vfs.NewCrashableMem()
	o := testOptions(t)
	o.fs = fs
	o.MemTableSize = 256 << 10 // flushes and compactions during the run
	s, err := Open(t.Context(), "/db", o)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		acked []ack
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]charla.Message, 8)
				for i := range batch {
					batch[i] = charla.Message{Conv: crashConv(w, i%crashConvsPerWriter), ClientMsgID: fmt.Sprintf("w%d-%d-%d", w, n, i),
						Body: []byte(`{"text":"` + strings.Repeat("y", 200) + `"}`)}
				}
				res, err := s.Append(context.Background(), batch)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				for i, r := range res {
					acked = append(acked, ack{batch[i].Conv, batch[i].ClientMsgID, r.Seq})
				}
				mu.Unlock()
			}
		}()
	}
	const crashes = 8
	for c := range crashes {
		time.Sleep(time.Duration(5+rng.IntN(30)) * time.Millisecond)
		mu.Lock()
		before := slices.Clone(acked)
		mu.Unlock()
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, uint64(c)))})
		co := o
		co.fs = crashed
		t.Run(fmt.Sprintf("Crash%d", c), func(t *testing.T) {
			cs, err := Open(t.Context(), "/db", co)
			if err != nil {
				t.Fatalf("Open after power loss: %v", err)
			}
			defer cs.Close()
			checkAcked(t, cs, before)
		})
	}
	close(stop)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("%d crashes, %d messages acked in all", crashes, len(acked))
}

// checkAcked checks that every acked message is in s at its seq, that each
// conversation is contiguous, and that a new message continues at head+1.
func checkAcked(t *testing.T, s *Store, acked []ack) {
	t.Helper()
	ctx := t.Context()
	want := map[charla.ConvID]map[string]charla.Seq{}
	for _, a := range acked {
		if want[a.conv] == nil {
			want[a.conv] = map[string]charla.Seq{}
		}
		want[a.conv][a.id] = a.seq
	}
	for w := range crashWriters {
		for c := range crashConvsPerWriter {
			conv := crashConv(w, c)
			msgs, err := s.Range(ctx, conv, 0, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]charla.Seq{}
			for i, m := range msgs {
				if m.Seq != charla.Seq(i+1) {
					t.Fatalf("%s: message %d has seq %d", conv, i, m.Seq)
				}
				got[m.ClientMsgID] = m.Seq
			}
			for id, seq := range want[conv] {
				if got[id] != seq {
					t.Fatalf("acked %s %s at seq %d: stored at %d after the crash", conv, id, seq, got[id])
				}
			}
			res, err := s.Append(ctx, []charla.Message{{Conv: conv, ClientMsgID: "after-crash", Body: []byte(`{}`)}})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Seq != charla.Seq(len(msgs)+1) || res[0].Duplicate {
				t.Fatalf("%s: first append after the crash got seq %d, want %d", conv, res[0].Seq, len(msgs)+1)
			}
		}
	}
}
