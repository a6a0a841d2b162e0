package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
	"github.com/urfave/cli/v2"
)

func checkCommand() *cli.Command {
	var flags []cli.Flag
	for _, f := range serveFlags() {
		if f.Names()[0] == "mount" {
			f = &cli.StringFlag{Name: "mount", Usage: "the mount to compare status with (optional)", EnvVars: env("mount")}
		}
		flags = append(flags, f)
	}
	flags = append(flags, boolf("up", "the state dir is memohfs up's: find its Postgres and containerd there"))
	return withConfig(&cli.Command{
		Name:  "check",
		Usage: "compare Postgres, containerd, the disk and the mount; change nothing; exit 1 on a problem",
		Description: "check lists where records and reality disagree: a bot record without its container or data dir,\n" +
			"a task running while its record (or, with --mount, its status file) says otherwise, a snapshot\n" +
			"without its record or a record without its snapshot or data copy, an address lease or network\n" +
			"namespace no running task holds, a delete left half done, and a bots/ or snapshots/ dir under\n" +
			"the data root with no bot record (data a crash left; reconcile moves it to the trash).\n" +
			"Containers labelled as bots with no record are listed as orphans (memohfs never deletes\n" +
			"them). Run it while no ctl write is in flight.\n\n" +
			"  memohfs check --up --state-dir /var/lib/memohfs --mount /memoh",
		Flags: flags,
		Action: func(c *cli.Context) error {
			var o serveOptions
			if c.Bool("up") {
				l, err := newUpLayout(c.String("state-dir"))
				if err != nil {
					return err
				}
				o = upOptions(c, l)
			} else {
				if c.String("database-url") == "" {
					return errors.New("--database-url (or --up for memohfs up's state dir) is required")
				}
				o = serveOptionsFrom(c)
			}
			rep, err := runCheck(c.Context, o)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, rep)
			if !rep.OK() {
				return cli.Exit("", 1)
			}
			return nil
		},
	})
}

// runCheck checks the installation o describes, from outside the daemon.
func runCheck(ctx context.Context, o serveOptions) (control.CheckReport, error) {
	rt, err := runtime.New(o.Runtime)
	if err != nil {
		return control.CheckReport{}, err
	}
	defer rt.Close()
	st, err := store.Open(ctx, o.DatabaseURL, store.Options{})
	if err != nil {
		return control.CheckReport{}, fmt.Errorf("postgres: %w", err)
	}
	defer st.Close()
	served := func() []string { return nil }
	live := func(ctx context.Context, name string) (control.Status, error) {
		rec, err := st.GetBot(ctx, name)
		if err != nil {
			return control.Status{}, err
		}
		// Without a mount, status is what Postgres says.
		return control.Status{Name: name, State: control.State(rec.Container.State), Pid: rec.Container.Pid, Snapshots: rec.Snapshots}, nil
	}
	if o.Mount != "" {
		served = func() []string {
			entries, _ := os.ReadDir(o.Mount)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return names
		}
		live = func(ctx context.Context, name string) (control.Status, error) {
			b, err := os.ReadFile(filepath.Join(o.Mount, name, "status"))
			if errors.Is(err, os.ErrNotExist) {
				return control.Status{}, &control.Error{Kind: control.KindNotFound, Msg: "not in the mount"}
			}
			if err != nil {
				return control.Status{}, err
			}
			return control.ParseStatus(strings.TrimSpace(string(b)) + "\n")
		}
	}
	dataRoot, err := filepath.Abs(o.DataRoot)
	if err != nil {
		return control.CheckReport{}, err
	}
	return control.CheckFrom(ctx, rt, st, dataRoot, served, live)
}
