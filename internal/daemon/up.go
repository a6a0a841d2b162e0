package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
	"github.com/memohfs/memohfs/runtime/ociimage"
)

// UpOptions are what `up` needs besides what it serves with.
type UpOptions struct {
	StateDir      string // everything up keeps: Postgres, containerd, bots' data, snapshots
	ContainerdBin string // dir with containerd and containerd-shim-runc-v2; "": FindBin's search
	PostgresBin   string // dir with initdb and postgres; "": the newest /usr/lib/postgresql/<v>/bin
	// Serve is what to serve with; what up runs itself is put where its
	// layout keeps it (Layout.Options).
	Serve Options
	// Stderr is told where the mount is and what to try, once up is
	// about to serve; nil: not told.
	Stderr io.Writer
}

// Up runs everything on this machine: it starts (or finds still running)
// a Postgres and a containerd of its own under o.StateDir, writes the bot
// image archive there if missing, and serves (Serve) with them; then it
// stops the two daemons (bots that run keep running).
func Up(ctx context.Context, o UpOptions, log *slog.Logger, reload func()) error {
	l, err := NewLayout(o.StateDir)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("up runs containers and mounts: run it as root")
	}
	ctrdBin, err := FindBin(o.ContainerdBin, "containerd", "containerd-shim-runc-v2")
	if err != nil {
		return err
	}

	pg, err := embedded.StartPostgres(ctx, embedded.PostgresConfig{
		BinDir: o.PostgresBin, Dir: l.postgresDir(), SocketDir: l.postgresSocketDir(),
	})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	log.Info("postgres", "dir", l.postgresDir(), "pid", pidOf(pg.Stamp()), "adopted", pg.Adopted)
	defer func() {
		if err := pg.Stop(); err != nil {
			log.Error("stop postgres", "err", err)
		} else {
			log.Info("postgres stopped")
		}
	}()
	if err := pg.EnsureDatabase(ctx, database); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}

	ctrd, err := embedded.StartContainerd(ctx, embedded.ContainerdConfig{
		BinDir: ctrdBin, Dir: l.containerdDir(), SocketDir: l.containerdSocketDir(),
	})
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	log.Info("containerd", "dir", l.containerdDir(), "pid", pidOf(ctrd.Stamp()), "adopted", ctrd.Adopted)
	defer func() {
		if err := ctrd.Stop(15 * time.Second); err != nil {
			log.Error("stop containerd", "err", err)
		} else {
			log.Info("containerd stopped (bots that run keep running)")
		}
	}()

	archive := l.imageArchive()
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(archive); err != nil {
		res, err := ociimage.WriteFile(archive, ociimage.Options{})
		if err != nil {
			return fmt.Errorf("bot image: %w", err)
		}
		log.Info("built the bot image", "name", res.Name, "digest", res.ManifestDigest, "archive", archive)
	}

	so := l.Options(o.Serve)
	// The daemons as started: the addresses Layout.Options gives, from
	// the daemons themselves.
	so.DatabaseURL = pg.URL(database)
	so.Runtime.Address = ctrd.Address()

	if o.Stderr != nil {
		fmt.Fprintf(o.Stderr, "memohfs: serving %s (state in %s). Try:\n"+
			"  mkdir %[1]s/demo && echo start > %[1]s/demo/ctl && cat %[1]s/demo/status\n", so.Mount, l.State)
	}
	return Serve(ctx, so, log, reload)
}

// database is the database up keeps in its Postgres.
const database = "memohfs"

// Layout is where `up` keeps things: everything under its state dir, but
// the daemons' sockets in a short dir of their own (unix socket paths are
// limited to 108 bytes).
type Layout struct {
	State string // the state dir, absolute
	Run   string // the sockets' dir (embedded.RunDir)
}

// NewLayout is the layout of the state dir state; it makes the sockets'
// dir.
func NewLayout(state string) (Layout, error) {
	abs, err := filepath.Abs(state)
	if err != nil {
		return Layout{}, err
	}
	run, err := embedded.RunDir(abs)
	if err != nil {
		return Layout{}, err
	}
	if err := os.MkdirAll(run, 0o711); err != nil {
		return Layout{}, err
	}
	return Layout{State: abs, Run: run}, nil
}

func (l Layout) path(p ...string) string { return filepath.Join(append([]string{l.State}, p...)...) }

func (l Layout) postgresDir() string         { return l.path("postgres") }
func (l Layout) postgresSocketDir() string   { return filepath.Join(l.Run, "pg") }
func (l Layout) containerdDir() string       { return l.path("containerd") }
func (l Layout) containerdSocketDir() string { return filepath.Join(l.Run, "ctrd") }
func (l Layout) imageArchive() string        { return l.path("images", "bot.tar") }

// Options is what up serves with, given the options o its flags make:
// what up runs and keeps itself (its Postgres, its containerd and the
// namespace there, the bundled bot image, the data root, the runtime's
// state and the CNI dirs) is where l keeps it, whatever o says; up has no
// flags for a snapshotter or an image, so those are the runtime's
// defaults. The rest (the mount, the bridge, subnet and CNI plugins, the
// switches) is o's. `check --up` finds an up's installation by it.
func (l Layout) Options(o Options) Options {
	o.DatabaseURL = embedded.PostgresConfig{SocketDir: l.postgresSocketDir()}.URL(database)
	o.DataRoot = l.path("data")
	o.Runtime.Address = embedded.ContainerdConfig{Dir: l.containerdDir(), SocketDir: l.containerdSocketDir()}.Address()
	o.Runtime.Namespace = "memohfs"
	o.Runtime.Snapshotter = ""
	o.Runtime.Image = ""
	o.Runtime.ImageArchive = l.imageArchive()
	o.Runtime.StateDir = l.path("runtime")
	o.Runtime.Network.ConfDir = l.path("cni", "net.d")
	o.Runtime.Network.IPAMDir = l.path("cni", "ipam")
	o.RunDir = l.Run
	return o
}

// FindBin finds a dir holding an executable of each of names: configured
// if set, else the dir memohfs runs from, then the dir of names[0] in
// PATH.
func FindBin(configured string, names ...string) (string, error) {
	has := func(dir string) bool {
		for _, n := range names {
			if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if configured != "" {
		if has(configured) {
			return configured, nil
		}
		return "", fmt.Errorf("%s lacks %v", configured, names)
	}
	if exe, err := os.Executable(); err == nil && has(filepath.Dir(exe)) {
		return filepath.Dir(exe), nil
	}
	if p, err := exec.LookPath(names[0]); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%v not found next to memohfs or in PATH (make build puts them in bin/)", names)
}

// pidOf is the pid a daemon's stamp names (0 if none).
func pidOf(s embedded.Stamp) int { pid, _ := s.Pid(); return pid }
