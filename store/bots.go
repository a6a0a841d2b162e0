package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// State is a container's recorded state.
type State string

const (
	StateCreated      State = "created"
	StateStarting     State = "starting"
	StateRunning      State = "running"
	StateStopping     State = "stopping"
	StateStopped      State = "stopped"
	StateSnapshotting State = "snapshotting"
	StateRestoring    State = "restoring"
	StateError        State = "error"
)

// Bot is a bot with its container record.
type Bot struct {
	ID        string
	Name      string
	OwnerUID  int64
	Version   int // the last version handed out; 0 before the first snapshot
	Snapshots int // how many snapshots are recorded
	Created   time.Time
	Container Container
}

// Container is the record of a bot's container.
type Container struct {
	ContainerID string
	Image       string
	Snapshotter string
	RootfsKey   string
	DataPath    string
	State       State
	AutoStart   bool
	Pid         int
	IP          string
	ExitCode    *int
	Error       string
	Created     time.Time
	Updated     time.Time
	Started     *time.Time
	Stopped     *time.Time
}

// NewBot is what CreateBot records.
type NewBot struct {
	Name        string
	OwnerUID    int64
	ContainerID string
	Image       string
	Snapshotter string
	RootfsKey   string
	DataPath    string
	AutoStart   bool
}

const botColumns = `b.id, b.name, b.owner_uid, b.last_version,
	(SELECT count(*) FROM snapshots s WHERE s.bot_id = b.id), b.created_at,
	c.container_id, c.image, c.snapshotter, COALESCE(c.rootfs_key, ''), c.data_path, c.state, c.auto_start,
	COALESCE(c.pid, 0), COALESCE(c.ip, ''), c.exit_code, COALESCE(c.error, ''),
	c.created_at, c.updated_at, c.started_at, c.stopped_at`

const botFrom = ` FROM bots b JOIN containers c ON c.bot_id = b.id`

func scanBot(row pgx.Row) (Bot, error) {
	var b Bot
	c := &b.Container
	err := row.Scan(&b.ID, &b.Name, &b.OwnerUID, &b.Version, &b.Snapshots, &b.Created,
		&c.ContainerID, &c.Image, &c.Snapshotter, &c.RootfsKey, &c.DataPath, &c.State, &c.AutoStart,
		&c.Pid, &c.IP, &c.ExitCode, &c.Error, &c.Created, &c.Updated, &c.Started, &c.Stopped)
	return b, err
}

// CreateBot records a bot, its container and a "create" event in one
// transaction. A taken name is AlreadyExists.
func (s *Store) CreateBot(ctx context.Context, nb NewBot) (Bot, error) {
	var id string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO bots (name, owner_uid) VALUES ($1, $2) RETURNING id`,
			nb.Name, nb.OwnerUID).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO containers
			(bot_id, container_id, image, snapshotter, rootfs_key, data_path, auto_start)
			VALUES ($1, $2, $3, $4, NULLIF($5, ''), $6, $7)`,
			id, nb.ContainerID, nb.Image, nb.Snapshotter, nb.RootfsKey, nb.DataPath, nb.AutoStart); err != nil {
			return err
		}
		return insertEvent(ctx, tx, id, Event{Type: "create", Payload: map[string]any{
			"container": nb.ContainerID, "image": nb.Image, "data": nb.DataPath}})
	})
	if err != nil {
		return Bot{}, classify(err, "create bot "+quote(nb.Name))
	}
	return s.botByID(ctx, id)
}

// GetBot finds a bot by name.
func (s *Store) GetBot(ctx context.Context, name string) (Bot, error) {
	b, err := scanBot(s.pool.QueryRow(ctx, `SELECT `+botColumns+botFrom+` WHERE b.name = $1`, name))
	return b, classify(err, "bot "+quote(name))
}

func (s *Store) botByID(ctx context.Context, id string) (Bot, error) {
	b, err := scanBot(s.pool.QueryRow(ctx, `SELECT `+botColumns+botFrom+` WHERE b.id = $1`, id))
	return b, classify(err, "bot "+id)
}

// ListBots lists every bot by name.
func (s *Store) ListBots(ctx context.Context) ([]Bot, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+botColumns+botFrom+` ORDER BY b.name`)
	if err != nil {
		return nil, classify(err, "list bots")
	}
	bots, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Bot, error) { return scanBot(r) })
	return bots, classify(err, "list bots")
}

// DeleteBot removes a bot and, with it, its container record, snapshots,
// versions and events.
func (s *Store) DeleteBot(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM bots WHERE id = $1`, id)
	if err != nil {
		return classify(err, "delete bot "+id)
	}
	if tag.RowsAffected() == 0 {
		return notFound("bot %s", id)
	}
	return nil
}

// StateChange is a transition of a bot's container, recorded with its
// event in one transaction. Pid, IP, ExitCode and Error describe the new
// state in full: zero values clear them.
type StateChange struct {
	State    State
	Pid      int
	IP       string
	ExitCode *int
	Error    string
	Started  bool // stamp started_at
	Stopped  bool // stamp stopped_at
	Event    *Event
}

// SetState records a transition and returns the updated bot.
func (s *Store) SetState(ctx context.Context, id string, ch StateChange) (Bot, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE containers SET state = $2, pid = NULLIF($3, 0), ip = NULLIF($4, ''),
			exit_code = $5, error = NULLIF($6, ''),
			started_at = CASE WHEN $7 THEN now() ELSE started_at END,
			stopped_at = CASE WHEN $8 THEN now() ELSE stopped_at END,
			updated_at = now()
			WHERE bot_id = $1`, id, ch.State, ch.Pid, ch.IP, ch.ExitCode, ch.Error, ch.Started, ch.Stopped)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		if ch.Event != nil {
			return insertEvent(ctx, tx, id, *ch.Event)
		}
		return nil
	})
	if err != nil {
		return Bot{}, classify(err, "set state of bot "+id)
	}
	return s.botByID(ctx, id)
}

// SetRootfs records the container's new rootfs key (after a restore or a
// re-create), with an optional event.
func (s *Store) SetRootfs(ctx context.Context, id, key string, ev *Event) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE containers SET rootfs_key = NULLIF($2, ''), updated_at = now() WHERE bot_id = $1`, id, key)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		if ev != nil {
			return insertEvent(ctx, tx, id, *ev)
		}
		return nil
	})
	return classify(err, "set rootfs of bot "+id)
}

// SetAutoStart says whether reconcile starts the bot after a restart.
func (s *Store) SetAutoStart(ctx context.Context, id string, on bool) error {
	tag, err := s.pool.Exec(ctx, `UPDATE containers SET auto_start = $2, updated_at = now() WHERE bot_id = $1`, id, on)
	if err == nil && tag.RowsAffected() == 0 {
		return notFound("bot %s", id)
	}
	return classify(err, "set auto_start of bot "+id)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
