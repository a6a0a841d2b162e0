package testenv

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/memohfs/memohfs/internal/embedded"
)

// Postgres is a private cluster of the run (or of one test).
type Postgres struct {
	*embedded.Postgres
}

func postgresConfig(dir string) embedded.PostgresConfig {
	return embedded.PostgresConfig{Dir: dir, NoSync: true, Settings: map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
		"max_connections": "300", "shared_buffers": "32MB",
	}}
}

func startPostgres(dir string) (*Postgres, error) {
	p, err := embedded.StartPostgres(context.Background(), postgresConfig(dir))
	if err != nil {
		return nil, err
	}
	return &Postgres{p}, nil
}

// Start starts a stopped cluster again.
func (p *Postgres) Start() error { return p.Restart() }

// Database creates an empty database for the test, dropped when it ends,
// and returns its connection string.
func (e *Env) Database(t testing.TB) string {
	t.Helper()
	if e.Postgres == nil {
		t.Fatal("testenv: this package did not ask for Postgres")
	}
	return e.Postgres.Database(t, e.unique(t, "t", 60))
}

// Database creates database name in this cluster for the test.
func (p *Postgres) Database(t testing.TB, name string) string {
	t.Helper()
	name = strings.ReplaceAll(name, "-", "_")
	ctx, cancel := ctxTimeout(30 * time.Second)
	defer cancel()
	if err := p.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(30 * time.Second)
		defer cancel()
		if !p.Stamp().Alive() {
			return // the cluster went with its test
		}
		if err := p.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return p.URL(name)
}

// NewPostgres starts a cluster of the test's own (for outage tests: it may
// be stopped and started at will), stopped when the test ends.
func (e *Env) NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, err := startPostgres(filepath.Join(e.TempDir(t), "pg"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}
