package postgres

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"charla"
)

// The group commit's shape was chosen by these benchmarks (run with
// go test -run XXX -bench Append ./store/postgres/):
//
//   - Unnest: appendSQL, the whole call as arrays in one statement (one round
//     trip, one transaction) — what Append does.
//   - PgxBatch: the same statement once per message with one-element arrays,
//     all queued in one pgx.Batch inside one transaction (BEGIN, the
//     pipelined batch, COMMIT: three round trips, one commit) — the same
//     semantics, through the alternative LIBRARY-NOTES measured. Without the
//     explicit transaction pgx syncs after every queued statement and each
//     one commits (and waits for its own WAL flush) on its own.
//   - Unnest4Parallel: four appenders at once on disjoint conversations,
//     as a store actor that keeps several group commits in flight would.
//   - UnnestFenced: Unnest on a store fenced as a cluster node (WithFence):
//     the same statement, plus the share-locked read of the call's shards'
//     epochs.
//   - UnnestSimpleProtocol: Append as through Supabase's transaction pooler
//     (no prepared statements: the statement is parsed and planned each call).
//   - RawInsert: for scale, a bare INSERT ... SELECT FROM unnest ... ON
//     CONFLICT DO NOTHING RETURNING with precomputed seqs: what sequencing
//     and duplicate reporting cost on top of writing the rows.
//
// Each call carries size messages spread over 50 conversations, all new.

func benchMsgs(n, call int) []charla.Message {
	msgs := make([]charla.Message, n)
	for i := range msgs {
		msgs[i] = tmsg(charla.ConvID(fmt.Sprintf("conv-%d", i%50)), fmt.Sprintf("%08d-%06d", call, i), "hello, this is a chat message")
	}
	return msgs
}

// benchAppend appends batches of size messages to s, one call at a time.
func benchAppend(b *testing.B, s *Store, size int) {
	ctx := b.Context()
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Append(ctx, benchMsgs(size, i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
}

func BenchmarkAppend(b *testing.B) {
	needDB(b)
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("Unnest/%d", size), func(b *testing.B) {
			benchAppend(b, openTest(b), size)
		})
		b.Run(fmt.Sprintf("Unnest4Parallel/%d", size), func(b *testing.B) {
			s := openTest(b)
			ctx := b.Context()
			var worker atomic.Int64
			b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 appenders
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				w := worker.Add(1)
				for i := 0; pb.Next(); i++ {
					msgs := benchMsgs(size, i)
					for j := range msgs { // each appender owns its conversations
						msgs[j].Conv = charla.ConvID(fmt.Sprintf("w%d-%s", w, msgs[j].Conv))
					}
					if _, err := s.Append(ctx, msgs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
		})
		b.Run(fmt.Sprintf("UnnestFenced/%d", size), func(b *testing.B) {
			benchAppend(b, openBenchFenced(b), size)
		})
		b.Run(fmt.Sprintf("UnnestSimpleProtocol/%d", size), func(b *testing.B) {
			benchAppend(b, openTest(b, "default_query_exec_mode", "simple_protocol"), size)
		})
		b.Run(fmt.Sprintf("PgxBatch/%d", size), func(b *testing.B) {
			s := openTest(b)
			ctx := b.Context()
			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				msgs := benchMsgs(size, i)
				var batch pgx.Batch
				for j := range msgs {
					a, err := makeAppendArgs(msgs[j:j+1], false)
					if err != nil {
						b.Fatal(err)
					}
					batch.Queue(appendSQL, a.conv, a.cmid, a.senderID, a.senderRole, a.body, a.ts)
				}
				tx, err := s.pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
		})
		b.Run(fmt.Sprintf("RawInsert/%d", size), func(b *testing.B) {
			s := openTest(b)
			ctx := b.Context()
			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				a, err := makeAppendArgs(benchMsgs(size, i), false)
				if err != nil {
					b.Fatal(err)
				}
				rows, err := s.pool.Query(ctx, rawInsertSQL, a.conv, a.cmid, a.senderID, a.senderRole, a.body, a.ts, i*size)
				if err != nil {
					b.Fatal(err)
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "rows/s")
		})
	}
}

// openBenchFenced opens a store fenced as a cluster node holding all of
// 64 shards (claimed): each call's 50 conversations touch dozens of them,
// so this measures the fence's cost per group commit (docs/CLUSTER.md §3)
// at the high end.
func openBenchFenced(b *testing.B) *Store {
	const shards = 64
	held := map[int]uint64{}
	for i := range shards {
		held[i] = 1
	}
	o := testOptions(schemaURL(b))
	s, err := Open(b.Context(), o, testLogger(b), WithFence(newTestFence(shards, held), testShardOf))
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	for i := range shards {
		if ok, err := s.ClaimShard(b.Context(), i, 1); err != nil || !ok {
			b.Fatalf("ClaimShard: %v, %v", ok, err)
		}
	}
	return s
}

const rawInsertSQL = `
INSERT INTO messages (conversation_id, seq, client_msg_id, sender_id, sender_role, body, created_at)
SELECT t.conv, t.ord + $7, t.cmid, t.sender_id, t.sender_role, t.body::jsonb, t.ts
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
     WITH ORDINALITY AS t(conv, cmid, sender_id, sender_role, body, ts, ord)
ON CONFLICT DO NOTHING
RETURNING seq`
