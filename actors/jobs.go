package actors

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// jobTable holds the inventory bridge's jobs: every request the soap actor
// accepted and could not answer from the cache at once. It lives outside
// the soap actor, owned by the tree (deps) and handed to each incarnation,
// because an accepted job must survive a restart of the actor: the new
// incarnation finds the unfinished ones here and runs them again (see
// soapActor.resume). That is also why it is the one piece of soap state
// behind a mutex: conn actors read it to answer job requests even while the
// soap actor is restarting.
//
// Retention is bounded twice: a finished job is dropped after
// SOAPConfig.JobRetention, and, past SOAPConfig.MaxJobs jobs, the oldest
// finished ones first; unfinished jobs are never dropped, and past MaxJobs
// of them a new one is refused (unavailable).
type jobTable struct {
	retention time.Duration
	max       int

	mu       sync.Mutex
	jobs     map[string]*job
	finished []string // ids in the order their jobs finished, for eviction
	active   int      // unfinished jobs
}

// job is one accepted request and where it is. Its fields are written under
// jobTable.mu only; the soap actor works on copies (snapshot) and writes
// back through the table's methods.
type job struct {
	id   string
	op   string // wire.TypeInventory, wire.TypeReserve or opSearch
	sku  string
	qty  int
	resv string // reservation id of a reserve

	// Who asked: a client (user, conn, ref) or an actor of the engine
	// (replyTo, for stockReq).
	user    charla.Sender
	conn    *actor.PID
	ref     string
	replyTo *actor.PID

	state     string // a wire.Job* state
	attempt   int
	announced bool // the client has been told the job id (the answer budget ran out)
	result    json.RawMessage
	err       *wire.JobError
	created   time.Time
	done      time.Time
}

func newJobTable(retention time.Duration, max int) *jobTable {
	return &jobTable{retention: retention, max: max, jobs: map[string]*job{}}
}

// add records j as queued under a new id and returns the id, or false when
// MaxJobs unfinished jobs already wait.
func (t *jobTable) add(j job) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.evict(time.Now())
	if t.active >= t.max {
		return "", false
	}
	j.id, j.state, j.created = newJobID(), wire.JobQueued, time.Now()
	t.jobs[j.id] = &j
	t.active++
	return j.id, true
}

// get returns a copy of the job id.
func (t *jobTable) get(id string) (job, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.jobs[id]
	if !ok {
		return job{}, false
	}
	return *j, true
}

// update applies f to the job id (unless it is finished) and returns the
// job as f left it; a job f makes final is counted as finished.
func (t *jobTable) update(id string, f func(*job)) (job, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.jobs[id]
	if !ok || isFinal(j.state) {
		return job{}, false
	}
	f(j)
	if isFinal(j.state) {
		j.done = time.Now()
		t.active--
		t.finished = append(t.finished, id)
	}
	return *j, true
}

// unfinished returns copies of every job not yet done or failed, oldest
// first, for a new incarnation of the soap actor to resume.
func (t *jobTable) unfinished() []job {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []job
	for _, j := range t.jobs {
		if !isFinal(j.state) {
			out = append(out, *j)
		}
	}
	sortJobs(out)
	return out
}

// counts returns the unfinished and total jobs held.
func (t *jobTable) counts() (active, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active, len(t.jobs)
}

// evict drops finished jobs past their retention, then the oldest finished
// ones while the table holds more than max.
func (t *jobTable) evict(now time.Time) {
	n := 0
	for _, id := range t.finished {
		j := t.jobs[id]
		if now.Sub(j.done) < t.retention && len(t.jobs) <= t.max {
			break
		}
		delete(t.jobs, id)
		n++
	}
	if n > 0 {
		t.finished = append(t.finished[:0:0], t.finished[n:]...)
	}
}

func isFinal(state string) bool { return state == wire.JobDone || state == wire.JobFailed }

// sortJobs orders jobs by creation, so that resumed jobs run in the order
// they were accepted.
func sortJobs(js []job) {
	slices.SortFunc(js, func(a, b job) int { return a.created.Compare(b.created) })
}

// newJobID returns an unguessable id: a job's result is only shown to its
// user, but an id that cannot be enumerated keeps it so even if that check
// were ever lost.
func newJobID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "job_" + hex.EncodeToString(b[:])
}

// frame is the job frame telling j's state, answering ref.
func (j job) frame(ref string) []byte {
	return wire.Encode(wire.Job{Type: wire.TypeJob, Ref: ref, JobID: j.id, Op: j.op, SKU: j.sku,
		State: j.state, Attempt: j.attempt, Result: j.result, Error: j.err})
}
