package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Event is one lifecycle event of a bot.
type Event struct {
	ID      int64
	BotID   string
	Type    string
	Payload map[string]any
	Time    time.Time
}

func insertEvent(ctx context.Context, tx pgx.Tx, botID string, ev Event) error {
	payload := ev.Payload
	if payload == nil {
		payload = map[string]any{}
	}
	_, err := tx.Exec(ctx, `INSERT INTO events (bot_id, type, payload) VALUES ($1, $2, $3)`, botID, ev.Type, payload)
	return err
}

// AddEvent records one event.
func (s *Store) AddEvent(ctx context.Context, botID string, ev Event) (Event, error) {
	payload := ev.Payload
	if payload == nil {
		payload = map[string]any{}
	}
	out := Event{BotID: botID, Type: ev.Type, Payload: payload}
	err := s.pool.QueryRow(ctx, `INSERT INTO events (bot_id, type, payload) VALUES ($1, $2, $3) RETURNING id, created_at`,
		botID, ev.Type, payload).Scan(&out.ID, &out.Time)
	return out, classify(err, "add event to bot "+botID)
}

// ListEvents lists a bot's events with id > after, oldest first, at most
// limit (all when limit <= 0).
func (s *Store) ListEvents(ctx context.Context, botID string, after int64, limit int) ([]Event, error) {
	q := `SELECT id, bot_id, type, payload, created_at FROM events WHERE bot_id = $1 AND id > $2 ORDER BY id`
	args := []any{botID, after}
	if limit > 0 {
		q += ` LIMIT $3`
		args = append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, classify(err, "list events of bot "+botID)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.ID, &e.BotID, &e.Type, &e.Payload, &e.Time)
		return e, err
	})
	return evs, classify(err, "list events of bot "+botID)
}

// LastEvent is the bot's newest event; NotFound if it has none.
func (s *Store) LastEvent(ctx context.Context, botID string) (Event, error) {
	var e Event
	err := s.pool.QueryRow(ctx, `SELECT id, bot_id, type, payload, created_at FROM events
		WHERE bot_id = $1 ORDER BY id DESC LIMIT 1`, botID).Scan(&e.ID, &e.BotID, &e.Type, &e.Payload, &e.Time)
	return e, classify(err, "last event of bot "+botID)
}
