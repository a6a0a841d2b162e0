package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/ninep"
)

// DefaultRunDir is where `serve` keeps its sockets (the 9P socket).
const DefaultRunDir = "/run/memohfs"

// NinePSocket is the 9P socket's name in the run dir.
const NinePSocket = "9p.sock"

// NinePListen are o's 9P listeners, `unix` alone made the socket in the
// run dir.
func NinePListen(o Options) []string {
	run := o.RunDir
	if run == "" {
		run = DefaultRunDir
	}
	out := make([]string, 0, len(o.NineP))
	for _, l := range o.NineP {
		if l == "unix" || l == "unix:" {
			l = "unix:" + filepath.Join(run, NinePSocket)
		}
		out = append(out, l)
	}
	return out
}

// serve9P starts the 9P face (--9p) over the same controller as the
// mount m, telling clients how data/ is served as the mount does. With
// no listener it serves nothing and its Close does nothing.
func serve9P(ctl *control.Controller, m *fsnodes.Mounted, o Options, log *slog.Logger) (*ninep.Server, error) {
	if len(o.NineP) == 0 {
		return nil, nil
	}
	s, err := ninep.Listen(ctl, ninep.Options{
		Listen: NinePListen(o), TokenFile: o.NinePTokenFile, AllowRemote: o.NinePRemote,
		DataPath: m.DataPath, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	log.Info("serving 9P2000.L", "listen", s.Addrs())
	return s, nil
}
