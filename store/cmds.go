package store

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cmd is the record of one command run in a bot through cmd/.
type Cmd struct {
	BotID   string
	N       int
	ExecID  string
	Argv    []string
	Dir     string
	UID     uint32
	Pid     int
	Started time.Time
	End     *CmdEnd // nil while it runs
}

// CmdEnd says how a command ended.
type CmdEnd struct {
	At     time.Time
	State  string // "exit", "signal", "failed" or "lost"
	Code   int    // for "exit"
	Signal string // for "signal": KILL, TERM, ...
	Error  string // for "failed": why it could not start
	Pid    int    // the process's host pid, when it ran
}

// Status is the end as a word pair: "exit 3", "signal KILL", "lost".
func (e CmdEnd) Status() string {
	switch e.State {
	case "exit":
		return "exit " + strconv.Itoa(e.Code)
	case "signal":
		return "signal " + e.Signal
	case "failed":
		return "failed: " + e.Error
	}
	return e.State
}

// StartCmd records a command that started, and its exec event, at once.
// detail is added to the event.
func (s *Store) StartCmd(ctx context.Context, c Cmd, detail map[string]any) (Cmd, error) {
	what := "record command of bot " + c.BotID
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO cmds (bot_id, n, exec_id, argv, dir, uid)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING started_at`,
			c.BotID, c.N, c.ExecID, c.Argv, c.Dir, int64(c.UID)).Scan(&c.Started); err != nil {
			return err
		}
		return insertEvent(ctx, tx, c.BotID, Event{Type: "exec", Payload: detail})
	})
	return c, classify(err, what)
}

// EndCmd records how a command ended, and its exit event, at once. A
// command already ended is left as it is (NotFound).
func (s *Store) EndCmd(ctx context.Context, botID string, n int, e CmdEnd, detail map[string]any) error {
	what := "record end of command " + strconv.Itoa(n) + " of bot " + botID
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var code *int
		var sig *string
		switch e.State {
		case "exit":
			code = &e.Code
		case "signal":
			sig = &e.Signal
		}
		var why *string
		if e.State == "failed" {
			why = &e.Error
		}
		var pid *int
		if e.Pid > 0 {
			pid = &e.Pid
		}
		tag, err := tx.Exec(ctx, `UPDATE cmds SET ended_at = $3, end_state = $4, exit_code = $5, signal = $6,
			error = $7, pid = coalesce($8, pid) WHERE bot_id = $1 AND n = $2 AND ended_at IS NULL`,
			botID, n, e.At, e.State, code, sig, why, pid)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return insertEvent(ctx, tx, botID, Event{Type: "exit", Payload: detail})
	})
	return classify(err, what)
}

// Cmds lists a bot's commands, oldest first: all of them, or only those
// with no end recorded.
func (s *Store) Cmds(ctx context.Context, botID string, openOnly bool) ([]Cmd, error) {
	q := `SELECT bot_id, n, exec_id, argv, dir, uid, coalesce(pid, 0), started_at, ended_at, end_state,
		coalesce(exit_code, 0), coalesce(signal, ''), coalesce(error, '') FROM cmds WHERE bot_id = $1`
	if openOnly {
		q += ` AND ended_at IS NULL`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY n`, botID)
	if err != nil {
		return nil, classify(err, "list commands of bot "+botID)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Cmd, error) {
		var c Cmd
		var uid int64
		var ended *time.Time
		var state *string
		var e CmdEnd
		err := r.Scan(&c.BotID, &c.N, &c.ExecID, &c.Argv, &c.Dir, &uid, &c.Pid, &c.Started, &ended, &state, &e.Code, &e.Signal, &e.Error)
		c.UID = uint32(uid)
		e.Pid = c.Pid
		if ended != nil && state != nil {
			e.At, e.State = *ended, *state
			c.End = &e
		}
		return c, err
	})
	return out, classify(err, "list commands of bot "+botID)
}

// LastCmd is the highest command number the bot has used (0 for none).
func (s *Store) LastCmd(ctx context.Context, botID string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(n), 0) FROM cmds WHERE bot_id = $1`, botID).Scan(&n)
	return n, classify(err, "last command of bot "+botID)
}
