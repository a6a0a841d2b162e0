package embedded

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
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresConfig places a private Postgres cluster. It listens on a unix
// socket only.
type PostgresConfig struct {
	BinDir    string // initdb, postgres; the newest /usr/lib/postgresql/<v>/bin when empty
	Dir       string // data/ and the log
	SocketDir string // the socket; Dir/sock when empty (keep it short)
	User      string // the system user the cluster runs as; "postgres" when empty
	// Settings are extra -c settings (fsync=off for tests, say).
	Settings map[string]string
	// NoSync makes initdb skip its fsyncs (tests).
	NoSync bool
}

// Postgres is a running private cluster.
type Postgres struct {
	cfg      PostgresConfig
	uid, gid int
	stamp    Stamp
	Adopted  bool
}

// PostgresBinDir finds the newest Debian server binaries.
func PostgresBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", errors.New("postgres server binaries not found (Debian: apt-get install postgresql)")
	}
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	return filepath.Dir(matches[0]), nil
}

func (c PostgresConfig) withDefaults() (PostgresConfig, error) {
	if c.BinDir == "" {
		d, err := PostgresBinDir()
		if err != nil {
			return c, err
		}
		c.BinDir = d
	}
	if c.SocketDir == "" {
		c.SocketDir = filepath.Join(c.Dir, "sock")
	}
	if c.User == "" {
		c.User = "postgres"
	}
	return c, nil
}

func (c PostgresConfig) dataDir() string { return filepath.Join(c.Dir, "data") }
func (c PostgresConfig) pidPath() string { return filepath.Join(c.Dir, "postgres.pid") }

// LogPath is the cluster's log.
func (c PostgresConfig) LogPath() string { return filepath.Join(c.Dir, "postgres.log") }

// StartPostgres initialises the cluster if needed (initdb refuses root:
// it runs as cfg.User), then starts it or adopts it if it runs, and waits
// until it accepts connections.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup(cfg.User)
	if err != nil {
		return nil, fmt.Errorf("postgres system user %q: %w", cfg.User, err)
	}
	p := &Postgres{cfg: cfg}
	p.uid, _ = strconv.Atoi(u.Uid)
	p.gid, _ = strconv.Atoi(u.Gid)
	for _, d := range []string{filepath.Dir(cfg.Dir), filepath.Dir(cfg.SocketDir)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
		if err := traversable(d, p.uid); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{cfg.Dir, cfg.dataDir(), cfg.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chown(d, p.uid, p.gid); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.dataDir(), "PG_VERSION")); err != nil {
		args := []string{"-D", cfg.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions"}
		if cfg.NoSync {
			args = append(args, "--no-sync")
		}
		out, err := p.command("initdb", args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("initdb: %v: %s", err, out)
		}
	}
	if s := ReadStamp(cfg.pidPath()); s.Alive() {
		p.stamp, p.Adopted = s, true
		if err := waitFor(20*time.Second, p.Ping); err != nil {
			return nil, fmt.Errorf("postgres %s runs but does not answer: %w", s, err)
		}
		return p, nil
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.cfg.BinDir, name), args...)
	cmd.Dir = p.cfg.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.gid)},
		Setpgid:    true,
	}
	return cmd
}

func (p *Postgres) start() error {
	logf, err := os.OpenFile(p.cfg.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Chown(logf.Name(), p.uid, p.gid)
	args := []string{"-D", p.cfg.dataDir(), "-k", p.cfg.SocketDir, "-c", "listen_addresses="}
	keys := make([]string, 0, len(p.cfg.Settings))
	for k := range p.cfg.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+p.cfg.Settings[k])
	}
	cmd := p.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	p.stamp = StampOf(cmd.Process.Pid)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := writeStamp(p.cfg.pidPath(), p.stamp); err != nil {
		p.Stop()
		return err
	}
	err = waitFor(30*time.Second, func() error {
		select {
		case <-exited:
			return errors.New("postgres exited")
		default:
		}
		return p.Ping()
	})
	if err != nil {
		p.Stop()
		return fmt.Errorf("postgres did not come up: %v; its log ends: %s", err, Tail(p.cfg.LogPath(), 8))
	}
	return nil
}

// Restart starts a stopped cluster again (outage tests).
func (p *Postgres) Restart() error {
	if p.stamp.Alive() {
		return nil
	}
	return p.start()
}

// Ping connects once.
func (p *Postgres) Ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// URL is a connection string for database db on the cluster's socket.
func (p *Postgres) URL(db string) string { return p.cfg.URL(db) }

// URL is the connection string for database db of the cluster configured
// so (whether it runs or not).
func (c PostgresConfig) URL(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", c.SocketDir, db)
}

// SocketDir is where the cluster's socket is.
func (p *Postgres) SocketDir() string { return p.cfg.SocketDir }

// Stamp names the postmaster.
func (p *Postgres) Stamp() Stamp { return p.stamp }

// Config is where the cluster lives.
func (p *Postgres) Config() PostgresConfig { return p.cfg }

// EnsureDatabase creates database name if it does not exist.
func (p *Postgres) EnsureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// Exec runs one statement on the "postgres" database.
func (p *Postgres) Exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the cluster down (fast: SIGINT) and waits for it.
func (p *Postgres) Stop() error {
	if p == nil || p.stamp == "" {
		return nil
	}
	err := p.stamp.Terminate(syscall.SIGINT, 30*time.Second)
	if err == nil {
		os.Remove(p.cfg.pidPath())
	}
	return err
}

// traversable checks the cluster's user can reach dir: every directory
// from / down must let it search (x).
func traversable(dir string, uid int) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil {
			return err
		}
		if int(st.Uid) != uid && st.Mode&0o001 == 0 {
			return fmt.Errorf("%s (mode %o) does not let the postgres user through: chmod o+x %s", d, st.Mode&0o777, d)
		}
		if d == "/" {
			return nil
		}
	}
}
