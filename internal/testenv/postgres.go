package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private cluster: Debian's binaries, run as the postgres
// system user (initdb refuses root), listening on a unix socket only.
type Postgres struct {
	Dir       string // cluster dir: data/ and sock/
	BinDir    string
	SocketDir string
	uid, gid  int
	stamp     string
}

// PostgresBinDir finds the newest /usr/lib/postgresql/<v>/bin.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("MEMOHFS_PG_BIN"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", errors.New("postgres server binaries missing (run `make deps`: postgresql)")
	}
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	return filepath.Dir(matches[0]), nil
}

func startPostgres(dir string) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres system user: %w", err)
	}
	p := &Postgres{Dir: dir, BinDir: bin, SocketDir: filepath.Join(dir, "sock")}
	p.uid, _ = strconv.Atoi(u.Uid)
	p.gid, _ = strconv.Atoi(u.Gid)
	for _, d := range []string{dir, filepath.Join(dir, "data"), p.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chown(d, p.uid, p.gid); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		out, err := p.command("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust",
			"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("initdb: %v: %s", err, out)
		}
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.BinDir, name), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.gid)},
		Setpgid:    true,
	}
	return cmd
}

// Start runs the postmaster and waits until it accepts connections.
func (p *Postgres) Start() error {
	if _, ok := stampAlive(p.stamp); ok {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(p.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Chown(logf.Name(), p.uid, p.gid)
	cmd := p.command("postgres", "-D", filepath.Join(p.Dir, "data"), "-k", p.SocketDir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	p.stamp = ownerStamp(cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(p.Dir, "postgres.pid"), []byte(p.stamp), 0o644); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	err = waitFor(30*time.Second, func() error {
		select {
		case <-exited:
			return errors.New("postgres exited")
		default:
		}
		ctx, cancel := ctxTimeout(time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		p.Stop()
		return fmt.Errorf("postgres did not come up: %v; log: %s", err, tail(logf.Name(), 10))
	}
	return nil
}

// Stop shuts the cluster down (fast mode: SIGINT) and waits for it.
func (p *Postgres) Stop() error {
	if p == nil || p.stamp == "" {
		return nil
	}
	err := terminate(p.stamp, syscall.SIGINT, 20*time.Second)
	p.stamp = ""
	return err
}

// URL is a libpq connection string for database db on the socket.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", p.SocketDir, db)
}

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
	if err := p.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(30 * time.Second)
		defer cancel()
		if _, alive := stampAlive(p.stamp); !alive {
			return // the cluster went with its test
		}
		if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return p.URL(name)
}

func (p *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
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
