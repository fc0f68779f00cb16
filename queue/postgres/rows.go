package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// querier is what loading needs: a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// nullTime maps the zero time to SQL NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// fromNull maps SQL NULL to the zero time, and returns times in UTC.
func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// nullString maps "" to SQL NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// parseState is the inverse of queue.RecipientState.String.
func parseState(s string) (queue.RecipientState, error) {
	for st := queue.Queued; st <= queue.Held; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown recipient state %q", s)
}

// outcomeJSON is the stored form of a queue.Outcome (columns last_result).
// Its field names are the storage format: do not rename them.
type outcomeJSON struct {
	Class    int       `json:"class"` // delivery.Class: 0 temporary, 1 permanent, 2 delivered
	Code     int       `json:"code,omitempty"`
	Enhanced []int     `json:"enhanced,omitempty"` // RFC 3463 class.subject.detail
	Text     string    `json:"text,omitempty"`
	Stage    string    `json:"stage,omitempty"`
	Host     string    `json:"host,omitempty"`
	Error    string    `json:"error,omitempty"`
	At       time.Time `json:"at"`
}

// encodeOutcome returns the JSON of o, or nil (SQL NULL) for a nil outcome.
func encodeOutcome(o *queue.Outcome) ([]byte, error) {
	if o == nil {
		return nil, nil
	}
	j := outcomeJSON{
		Class: int(o.Class),
		Code:  o.Reply.Code,
		Text:  o.Reply.Text,
		Stage: string(o.Stage),
		Host:  o.Host,
		Error: o.Error,
		At:    o.At,
	}
	if !o.Reply.Enhanced.IsZero() {
		j.Enhanced = o.Reply.Enhanced[:]
	}
	return json.Marshal(j)
}

// decodeOutcome is the inverse of encodeOutcome.
func decodeOutcome(b []byte) (*queue.Outcome, error) {
	if b == nil {
		return nil, nil
	}
	var j outcomeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("stored outcome: %w", err)
	}
	if j.Enhanced != nil && len(j.Enhanced) != 3 {
		return nil, fmt.Errorf("stored outcome: enhanced code has %d parts", len(j.Enhanced))
	}
	o := &queue.Outcome{
		Class: delivery.Class(j.Class),
		Reply: delivery.Reply{Code: j.Code, Text: j.Text},
		Stage: delivery.Stage(j.Stage),
		Host:  j.Host,
		Error: j.Error,
		At:    j.At,
	}
	copy(o.Reply.Enhanced[:], j.Enhanced)
	return o, nil
}

// scanMessage reads the columns of selectMessages and listMessages.
func scanMessage(row pgx.CollectableRow) (*queue.Message, error) {
	m := new(queue.Message)
	var id string
	var key *string
	err := row.Scan(&id, &m.From, &m.Arrived, &m.Size, &key, &m.EightBit, &m.Return, &m.EnvelopeID, &m.RequireTLS)
	if err != nil {
		return nil, err
	}
	m.ID = queue.ID(id)
	m.Arrived = m.Arrived.UTC()
	if key != nil {
		m.IdempotencyKey = *key
	}
	return m, nil
}

// loadMessages returns the messages with the given IDs that exist, ordered
// by ID, with their recipients.
func loadMessages(ctx context.Context, q querier, sql *queries, ids []string) ([]*queue.Message, error) {
	rows, err := q.Query(ctx, sql.selectMessages, ids)
	if err != nil {
		return nil, err
	}
	msgs, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, err
	}
	if err := loadRecipients(ctx, q, sql, msgs); err != nil {
		return nil, err
	}
	return msgs, nil
}

// loadRecipients fills in the recipients of msgs, in envelope order.
func loadRecipients(ctx context.Context, q querier, sql *queries, msgs []*queue.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = string(m.ID)
	}
	rows, err := q.Query(ctx, sql.selectRecipients, ids)
	if err != nil {
		return err
	}
	return scanRecipients(rows, msgs)
}

// queueLoad adds to b the two queries that load the messages ids with
// their recipients into *msgs.
func queueLoad(b *pgx.Batch, sql *queries, ids []string, msgs *[]*queue.Message) {
	b.Queue(sql.selectMessages, ids).Query(func(rows pgx.Rows) error {
		var err error
		*msgs, err = pgx.CollectRows(rows, scanMessage)
		return err
	})
	b.Queue(sql.selectRecipients, ids).Query(func(rows pgx.Rows) error {
		return scanRecipients(rows, *msgs)
	})
}

// scanRecipients reads the rows of selectRecipients into msgs, and closes
// rows.
func scanRecipients(rows pgx.Rows, msgs []*queue.Message) error {
	defer rows.Close()
	byID := make(map[string]*queue.Message, len(msgs))
	for _, m := range msgs {
		byID[string(m.ID)] = m
	}
	for rows.Next() {
		var (
			id, state   string
			r           queue.Recipient
			lastAttempt *time.Time
			result      []byte
		)
		err := rows.Scan(&id, &r.Address, &r.Destination, &r.Notify, &r.ORCPT, &state, &r.Attempts,
			&r.NextAttempt, &lastAttempt, &result, &r.DelayWarned, &r.PossibleDuplicate)
		if err != nil {
			return err
		}
		if r.State, err = parseState(state); err != nil {
			return err
		}
		if r.LastResult, err = decodeOutcome(result); err != nil {
			return err
		}
		r.NextAttempt = r.NextAttempt.UTC()
		r.LastAttempt = fromNull(lastAttempt)
		if m := byID[id]; m != nil {
			m.Recipients = append(m.Recipients, r)
		}
	}
	return rows.Err()
}
