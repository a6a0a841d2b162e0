package daemon

import (
	"os"
	"time"

	"github.com/memohfs/memohfs/runtime"
)

// Options are what serving a mount needs: `serve` takes them from its
// flags, `up` from the same flags with its own layout over them
// (Layout.Options), and `check` uses them to find what it checks. A new
// setting is a field here, read from its flag in one place
// (cmd/memohfs's serveOptionsFrom) and passed on where Serve builds the
// options of the package it is for.
type Options struct {
	Mount       string         // the mount point
	DatabaseURL string         // Postgres: a libpq URL or key=value string
	Runtime     runtime.Config // containerd, the bot image, runtime state, the bots' network
	DataRoot    string         // bots' data dirs and snapshot data; made absolute by Serve and Check

	AllowOther     bool // let users other than root use the mount
	StopBotsOnExit bool // stop every running bot once unmounted
	DebugFUSE      bool // log every FUSE request
	DataBinds      bool // bind each bot's data dir over its data/ node
	FollowSymlinks bool // let the host follow symlinks under the mount

	Pprof   string // serve Go profiles (net/http/pprof) on this address; "": none
	Metrics string // serve Prometheus metrics at http://<this address>/metrics; "": none

	// NineP are the 9P2000.L listeners (internal/ninep): unix:PATH,
	// tcp:HOST:PORT, or unix alone for NinePSocket in the run dir.
	NineP          []string
	NinePTokenFile string // the secret a TCP client sends first
	NinePRemote    bool   // let a TCP listener bind a non-loopback address
	// RunDir is where `unix` alone puts the 9P socket; "": DefaultRunDir.
	RunDir string

	// TrashKeep is how long the trash keeps an entry (control.Options);
	// 0 keeps them for ever.
	TrashKeep time.Duration

	// Signals caught since the command began (mount.Trap): SIGINT and
	// SIGTERM end serving, SIGHUP reloads. Nil: Serve catches them from
	// when it mounts.
	Signals <-chan os.Signal
}
