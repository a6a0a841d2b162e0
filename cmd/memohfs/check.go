package main

import (
	"errors"
	"fmt"

	"github.com/memohfs/memohfs/internal/daemon"
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
			"them). With --mount it also checks each bot's data/ bind (status `data-path bind`): exactly one\n" +
			"mount on <mount>/<bot>/data, showing the bot's data dir (same st_dev/st_ino), with nosymfollow,\n" +
			"nodev and nosuid; and no mount there for a bot whose data/ goes through FUSE; each snapshot\n" +
			"view bound (snapshots/<snap>/data and rootfs) read-only with the same flags, of a snapshot the\n" +
			"bot has, a data view showing the snapshot's copy; and nothing else mounted under the mount. Run it in the\n" +
			"daemon's mount namespace, while no ctl write is in flight.\n\n" +
			"  memohfs check --up --state-dir /var/lib/memohfs --mount /memoh",
		Flags:  flags,
		Action: checkAction,
	})
}

// checkOptionsFrom is what check checks: the installation serve's flags
// describe or, with --up, the one up keeps in --state-dir.
func checkOptionsFrom(c *cli.Context) (daemon.Options, error) {
	if c.Bool("up") {
		l, err := daemon.NewLayout(c.String("state-dir"))
		if err != nil {
			return daemon.Options{}, err
		}
		return l.Options(serveOptionsFrom(c)), nil
	}
	if c.String("database-url") == "" {
		return daemon.Options{}, errors.New("--database-url (or --up for memohfs up's state dir) is required")
	}
	return serveOptionsFrom(c), nil
}

func checkAction(c *cli.Context) error {
	o, err := checkOptionsFrom(c)
	if err != nil {
		return err
	}
	rep, err := daemon.Check(c.Context, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, rep)
	if !rep.OK() {
		return cli.Exit("", 1)
	}
	return nil
}
