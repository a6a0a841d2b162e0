package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// Every option is a flag, a MEMOHFS_* environment variable and a key of
// the TOML file given by --config, in that order of precedence.

func env(name string) []string {
	return []string{"MEMOHFS_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

func str(name, value, usage string) cli.Flag {
	return altsrc.NewStringFlag(&cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)})
}

func boolf(name, usage string) cli.Flag {
	return altsrc.NewBoolFlag(&cli.BoolFlag{Name: name, Usage: usage, EnvVars: env(name)})
}

func dur(name string, value time.Duration, usage string) cli.Flag {
	return altsrc.NewDurationFlag(&cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)})
}

// strs is a flag that may be given more than once (and, from the
// environment, as a comma-separated list).
func strs(name, usage string) cli.Flag {
	return altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: env(name)})
}

// boolOn is boolf for a flag that is on unless turned off (--name=false).
func boolOn(name, usage string) cli.Flag {
	return altsrc.NewBoolFlag(&cli.BoolFlag{Name: name, Usage: usage, EnvVars: env(name), Value: true})
}

var configFlag = &cli.StringFlag{Name: "config", Usage: "TOML file with defaults for these flags (keys: the flag names)", EnvVars: env("config")}

// withConfig makes the TOML file feed the command's flags.
func withConfig(cmd *cli.Command) *cli.Command {
	cmd.Flags = append(cmd.Flags, configFlag)
	cmd.Before = altsrc.InitInputSourceWithContext(cmd.Flags, altsrc.NewTomlSourceFromFlagFunc("config"))
	return cmd
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		str("log-format", "text", "log format: text or json"),
		str("log-level", "info", "log level: debug, info, warn or error"),
	}
}

// logging sets up slog from the flags; the level can change later
// (SIGHUP).
type logging struct {
	level  slog.LevelVar
	logger *slog.Logger
}

func newLogging(c *cli.Context, w io.Writer) (*logging, error) {
	l := &logging{}
	if err := l.setLevel(c.String("log-level")); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: &l.level}
	switch c.String("log-format") {
	case "text":
		l.logger = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		l.logger = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return nil, fmt.Errorf("--log-format: want text or json, not %q", c.String("log-format"))
	}
	slog.SetDefault(l.logger)
	return l, nil
}

func (l *logging) setLevel(s string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("--log-level: want debug, info, warn or error, not %q", s)
	}
	l.level.Set(lv)
	return nil
}

// reload re-reads what can change without a restart (the log level) from
// the config file, unless a flag or the environment fixed it.
func (l *logging) reload(c *cli.Context) {
	if c.IsSet("log-level") || os.Getenv(env("log-level")[0]) != "" || c.String("config") == "" {
		l.logger.Info("reload: nothing to re-read (log level fixed by flag or environment, or no --config)")
		return
	}
	var conf map[string]any
	if _, err := toml.DecodeFile(c.String("config"), &conf); err != nil {
		l.logger.Error("reload: config file", "err", err)
		return
	}
	if v, ok := conf["log-level"].(string); ok {
		if err := l.setLevel(v); err != nil {
			l.logger.Error("reload", "err", err)
			return
		}
		l.logger.Info("reload: log level", "level", v)
	}
	l.logger.Info("reload: other settings take effect at the next start")
}

// splitPath splits a colon separated list of dirs (--cni-bin-dir),
// dropping empty ones.
func splitPath(s string) []string {
	var out []string
	for _, p := range filepath.SplitList(s) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}
