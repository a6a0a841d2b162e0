package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Snapshot sources.
const (
	SourceManual     = "manual"
	SourceAuto       = "auto"
	SourcePreRestore = "pre_restore"
)

// Snapshot is a recorded snapshot with its version.
type Snapshot struct {
	ID         string
	BotID      string
	Name       string
	Version    int
	RuntimeKey string
	Parent     string
	Source     string
	DataPath   string
	Created    time.Time
}

// NewSnapshot is what CreateSnapshot records.
type NewSnapshot struct {
	// Name of the snapshot; "v<version>" when empty.
	Name       string
	RuntimeKey string
	Parent     string
	Source     string // SourceManual when empty
	DataPath   string
	// Detail is added to the snapshot event's payload.
	Detail map[string]any
}

const snapshotColumns = `s.id, s.bot_id, s.name, COALESCE(v.version, 0), s.runtime_key, COALESCE(s.parent, ''),
	s.source, COALESCE(s.data_path, ''), s.created_at`

const snapshotFrom = ` FROM snapshots s LEFT JOIN versions v ON v.snapshot_id = s.id`

func scanSnapshot(row pgx.Row) (Snapshot, error) {
	var s Snapshot
	err := row.Scan(&s.ID, &s.BotID, &s.Name, &s.Version, &s.RuntimeKey, &s.Parent, &s.Source, &s.DataPath, &s.Created)
	return s, err
}

// NextVersion is the version the bot's next snapshot will get, for
// callers that need to name things before CreateSnapshot runs. Only a
// per-bot lock held across both makes it exact.
func (s *Store) NextVersion(ctx context.Context, botID string) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT last_version + 1 FROM bots WHERE id = $1`, botID).Scan(&v)
	return v, classify(err, "next version of bot "+botID)
}

// CreateSnapshot records a snapshot, its version (the bot's next: versions
// only grow) and a "snapshot" event in one transaction. A taken name or
// runtime key is AlreadyExists; nothing is recorded then.
func (s *Store) CreateSnapshot(ctx context.Context, botID string, ns NewSnapshot) (Snapshot, error) {
	if ns.Source == "" {
		ns.Source = SourceManual
	}
	var id string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var version int
		// The row lock on the bot serialises versions across processes.
		if err := tx.QueryRow(ctx, `UPDATE bots SET last_version = last_version + 1 WHERE id = $1 RETURNING last_version`,
			botID).Scan(&version); err != nil {
			return err
		}
		name := ns.Name
		if name == "" {
			name = fmt.Sprintf("v%d", version)
		}
		if err := tx.QueryRow(ctx, `INSERT INTO snapshots (bot_id, name, runtime_key, parent, source, data_path)
			VALUES ($1, $2, $3, NULLIF($4, ''), $5, NULLIF($6, '')) RETURNING id`,
			botID, name, ns.RuntimeKey, ns.Parent, ns.Source, ns.DataPath).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO versions (bot_id, version, snapshot_id) VALUES ($1, $2, $3)`,
			botID, version, id); err != nil {
			return err
		}
		payload := map[string]any{"name": name, "version": version, "source": ns.Source, "key": ns.RuntimeKey}
		for k, v := range ns.Detail {
			payload[k] = v
		}
		return insertEvent(ctx, tx, botID, Event{Type: "snapshot", Payload: payload})
	})
	what := "snapshot " + quote(ns.Name) + " of bot " + botID
	if err != nil {
		return Snapshot{}, classify(err, what)
	}
	snap, err := scanSnapshot(s.pool.QueryRow(ctx, `SELECT `+snapshotColumns+snapshotFrom+` WHERE s.id = $1`, id))
	return snap, classify(err, what)
}

// GetSnapshot finds a bot's snapshot by name.
func (s *Store) GetSnapshot(ctx context.Context, botID, name string) (Snapshot, error) {
	snap, err := scanSnapshot(s.pool.QueryRow(ctx,
		`SELECT `+snapshotColumns+snapshotFrom+` WHERE s.bot_id = $1 AND s.name = $2`, botID, name))
	return snap, classify(err, "snapshot "+quote(name)+" of bot "+botID)
}

// GetVersion finds a bot's snapshot by version.
func (s *Store) GetVersion(ctx context.Context, botID string, version int) (Snapshot, error) {
	snap, err := scanSnapshot(s.pool.QueryRow(ctx,
		`SELECT `+snapshotColumns+snapshotFrom+` WHERE s.bot_id = $1 AND v.version = $2`, botID, version))
	return snap, classify(err, fmt.Sprintf("version %d of bot %s", version, botID))
}

// ListSnapshots lists a bot's snapshots, oldest version first.
func (s *Store) ListSnapshots(ctx context.Context, botID string) ([]Snapshot, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+snapshotColumns+snapshotFrom+
		` WHERE s.bot_id = $1 ORDER BY v.version NULLS LAST, s.created_at, s.name`, botID)
	if err != nil {
		return nil, classify(err, "list snapshots of bot "+botID)
	}
	snaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Snapshot, error) { return scanSnapshot(r) })
	return snaps, classify(err, "list snapshots of bot "+botID)
}

// DeleteSnapshot removes a snapshot record, its version row, and records a
// "snapshot-drop" event, in one transaction.
func (s *Store) DeleteSnapshot(ctx context.Context, botID, name string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var key string
		if err := tx.QueryRow(ctx, `DELETE FROM snapshots WHERE bot_id = $1 AND name = $2 RETURNING runtime_key`,
			botID, name).Scan(&key); err != nil {
			return err
		}
		return insertEvent(ctx, tx, botID, Event{Type: "snapshot-drop", Payload: map[string]any{"name": name, "key": key}})
	})
	return classify(err, "snapshot "+quote(name)+" of bot "+botID)
}
