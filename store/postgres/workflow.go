package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"charla"
	"charla/store"
)

// stateColumns are read in this order by scanState.
const stateColumns = `id, channel, customer, status, coalesce(assignee, ''), tags, head, last_message, last_activity, created_at, version, reads`

func scanState(row pgx.Row) (store.ConvState, error) {
	var c store.ConvState
	var id string
	var head int64
	var last, reads []byte
	err := row.Scan(&id, &c.Channel, &c.Customer, &c.Status, &c.Assignee, &c.Tags, &head, &last, &c.LastActivity, &c.CreatedAt, &c.Version, &reads)
	if err != nil {
		return c, err
	}
	c.ID, c.Head = charla.ConvID(id), charla.Seq(head)
	c.LastActivity, c.CreatedAt = c.LastActivity.UTC(), c.CreatedAt.UTC()
	if len(last) > 0 {
		c.Last = new(store.LastMessage)
		if err := json.Unmarshal(last, c.Last); err != nil {
			return c, err
		}
	}
	if err := json.Unmarshal(reads, &c.Reads); err != nil {
		return c, err
	}
	return c, nil
}

const saveStateSQL = `
INSERT INTO conversations (id, channel, customer, status, assignee, tags, last_message, last_activity, version, reads, created_at)
VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, customer = EXCLUDED.customer, status = EXCLUDED.status,
    assignee = EXCLUDED.assignee, tags = EXCLUDED.tags, last_message = EXCLUDED.last_message,
    last_activity = EXCLUDED.last_activity, version = EXCLUDED.version, reads = EXCLUDED.reads
WHERE conversations.version <= EXCLUDED.version`

// SaveConvStates writes the states in one round trip (head is Append's: it
// is not written here). A state older than the stored one is ignored.
//
// The batch is one transaction, and it locks its rows in conversation id
// order, as Append does: a save and an append (or the saves of two nodes)
// sharing conversations then wait for each other instead of deadlocking.
// In the callers' order they deadlocked under a cluster's fail-over load
// (SQLSTATE 40P01, thousands of retries).
func (s *Store) SaveConvStates(ctx context.Context, states []store.ConvState) error {
	sorted := slices.SortedFunc(slices.Values(states), func(a, b store.ConvState) int { return cmp.Compare(a.ID, b.ID) })
	return s.do(ctx, opWorkflow, func(ctx context.Context) error {
		var b pgx.Batch
		for _, c := range sorted {
			var last []byte
			if c.Last != nil {
				last, _ = json.Marshal(c.Last)
			}
			reads, _ := json.Marshal(c.Reads)
			tags := c.Tags
			if tags == nil {
				tags = []string{}
			}
			b.Queue(saveStateSQL, string(c.ID), c.Channel, c.Customer, c.Status, c.Assignee, tags, last, c.LastActivity, c.Version, reads, c.CreatedAt)
		}
		return s.pool.SendBatch(ctx, &b).Close()
	})
}

// LoadConvState reads one conversation's state.
func (s *Store) LoadConvState(ctx context.Context, conv charla.ConvID) (c store.ConvState, found bool, err error) {
	err = s.do(ctx, opWorkflow, func(ctx context.Context) error {
		// Version 0 is a row Append made before the inbox ever saved the
		// conversation's state (channel, customer): not a state, so the
		// inbox builds one from the messages, as on a store without the row.
		c, err = scanState(s.pool.QueryRow(ctx, `SELECT `+stateColumns+` FROM conversations WHERE id = $1 AND version > 0`, string(conv)))
		found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	return c, found, err
}

// queryStates runs a query of whole states.
func (s *Store) queryStates(ctx context.Context, sql string, args ...any) ([]store.ConvState, error) {
	var out []store.ConvState
	err := s.do(ctx, opWorkflow, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanState(rows)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	return out, err
}

// LoadInbox returns every conversation that is not resolved (the queue
// index), and the highest version of any.
func (s *Store) LoadInbox(ctx context.Context) ([]store.ConvState, uint64, error) {
	out, err := s.queryStates(ctx, `SELECT `+stateColumns+` FROM conversations WHERE status <> 'resolved' AND version > 0`)
	if err != nil {
		return nil, 0, err
	}
	var top int64
	err = s.do(ctx, opWorkflow, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM conversations`).Scan(&top)
	})
	return out, uint64(top), err
}

// ListConvStates lists conversations by filter: by last activity (newest
// first, (last_activity, id) the page cursor) or, with ChangedSince, by
// version.
func (s *Store) ListConvStates(ctx context.Context, f store.ConvFilter) ([]store.ConvState, error) {
	where := []string{"version > 0"} // a row only Append has written is no state yet (LoadConvState)
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if f.Status != "" {
		where = append(where, "status = "+arg(f.Status))
	}
	if f.Assignee != "" {
		where = append(where, "assignee = "+arg(f.Assignee))
	}
	if f.Unassigned {
		where = append(where, "assignee IS NULL")
	}
	if f.VisibleTo != "" {
		where = append(where, "(assignee IS NULL OR assignee = "+arg(f.VisibleTo)+")")
	}
	if f.Tag != "" {
		where = append(where, "tags @> ARRAY["+arg(f.Tag)+"]::text[]")
	}
	order := " ORDER BY last_activity DESC, id DESC"
	switch {
	case f.ChangedSince > 0:
		since := f.ChangedSince
		if f.After != nil {
			since = max(since, f.After.Version)
		}
		where = append(where, "version > "+arg(since))
		order = " ORDER BY version"
	case f.After != nil:
		where = append(where, "(last_activity, id) < ("+arg(f.After.LastActivity)+"::timestamptz, "+arg(string(f.After.ID))+"::text)")
	}
	sql := `SELECT ` + stateColumns + ` FROM conversations WHERE ` + strings.Join(where, " AND ")
	sql += order
	if f.Limit > 0 {
		sql += " LIMIT " + arg(f.Limit)
	}
	return s.queryStates(ctx, sql, args...)
}

// SaveBotSession upserts a chatbot session.
func (s *Store) SaveBotSession(ctx context.Context, b store.BotSession) error {
	return s.do(ctx, opWorkflow, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `
INSERT INTO chatbot_sessions (conversation_id, customer, state, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (conversation_id) DO UPDATE SET customer = EXCLUDED.customer, state = EXCLUDED.state,
    expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at`,
			string(b.Conv), b.Customer, []byte(b.State), b.ExpiresAt, b.UpdatedAt)
		return err
	})
}

// LoadBotSession reads a chatbot session.
func (s *Store) LoadBotSession(ctx context.Context, conv charla.ConvID) (b store.BotSession, found bool, err error) {
	b.Conv = conv
	err = s.do(ctx, opWorkflow, func(ctx context.Context) error {
		var state []byte
		err := s.pool.QueryRow(ctx, `SELECT customer, state, expires_at, updated_at FROM chatbot_sessions WHERE conversation_id = $1`,
			string(conv)).Scan(&b.Customer, &state, &b.ExpiresAt, &b.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found, b.State = err == nil, state
		return err
	})
	return b, found, err
}

// PutCanned creates or replaces a canned reply.
func (s *Store) PutCanned(ctx context.Context, c store.CannedReply) error {
	return s.do(ctx, opWorkflow, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `INSERT INTO canned_replies (code, text, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (code) DO UPDATE SET text = EXCLUDED.text, updated_at = EXCLUDED.updated_at`, c.Code, c.Text, c.UpdatedAt)
		return err
	})
}

// DeleteCanned removes a canned reply.
func (s *Store) DeleteCanned(ctx context.Context, code string) (found bool, err error) {
	err = s.do(ctx, opWorkflow, func(ctx context.Context) error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM canned_replies WHERE code = $1`, code)
		found = tag.RowsAffected() > 0
		return err
	})
	return found, err
}

// ListCanned returns every canned reply, by code.
func (s *Store) ListCanned(ctx context.Context) ([]store.CannedReply, error) {
	out := []store.CannedReply{}
	err := s.do(ctx, opWorkflow, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT code, text, updated_at FROM canned_replies ORDER BY code`)
		if err != nil {
			return err
		}
		var c store.CannedReply
		_, err = pgx.ForEachRow(rows, []any{&c.Code, &c.Text, &c.UpdatedAt}, func() error {
			c.UpdatedAt = c.UpdatedAt.UTC()
			out = append(out, c)
			return nil
		})
		return err
	})
	return out, err
}

// SetAgentCapacity sets an agent's capacity; negative returns it to the
// default.
func (s *Store) SetAgentCapacity(ctx context.Context, agent string, capacity int) error {
	return s.do(ctx, opWorkflow, func(ctx context.Context) error {
		if capacity < 0 {
			_, err := s.pool.Exec(ctx, `DELETE FROM agent_capacities WHERE agent_id = $1`, agent)
			return err
		}
		_, err := s.pool.Exec(ctx, `INSERT INTO agent_capacities (agent_id, capacity) VALUES ($1, $2)
ON CONFLICT (agent_id) DO UPDATE SET capacity = EXCLUDED.capacity`, agent, capacity)
		return err
	})
}

// AgentCapacities returns the agents' own capacities.
func (s *Store) AgentCapacities(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := s.do(ctx, opWorkflow, func(ctx context.Context) error {
		clear(out)
		rows, err := s.pool.Query(ctx, `SELECT agent_id, capacity FROM agent_capacities`)
		if err != nil {
			return err
		}
		var id string
		var n int
		_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
		return err
	})
	return out, err
}

// SearchMessages finds messages whose text holds every word of query,
// through the full-text index (messages_text_fts_idx), newest first.
func (s *Store) SearchMessages(ctx context.Context, query string, limit int) ([]charla.Message, error) {
	var out []charla.Message
	err := s.do(ctx, opWorkflow, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `
SELECT conversation_id, seq, client_msg_id, sender_id, sender_role, body, created_at FROM messages
WHERE to_tsvector('simple', coalesce(body->>'text', '')) @@ plainto_tsquery('simple', $1)
ORDER BY created_at DESC LIMIT $2`, query, limit)
		if err != nil {
			return err
		}
		var (
			conv, cmid, sid, role string
			seq                   int64
			body                  []byte
			ts                    time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&conv, &seq, &cmid, &sid, &role, &body, &ts}, func() error {
			out = append(out, charla.Message{Conv: charla.ConvID(conv), Seq: charla.Seq(seq), ClientMsgID: cmid,
				Sender: charla.Sender{ID: sid, Role: charla.Role(role)}, Body: compactJSON(body), TS: ts.UTC()})
			return nil
		})
		return err
	})
	return out, err
}
