package control_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/store"
)

const (
	firstOwner  = 1001 // made the bot and planted its secret
	secondOwner = 2002 // mkdirs the same name afterwards
)

// plant makes bot for firstOwner with a secret in data/ and a snapshot
// (whose data copy holds the secret too).
func plant(r *rig, bot string) {
	r.t.Helper()
	if err := r.c.Create(r.t.Context(), bot, firstOwner); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.c.DataDir(bot), "secret"), []byte("secret of "+bot), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.ctl(bot, "snapshot s1")
	if _, err := os.Stat(filepath.Join(r.opts.DataRoot, "snapshots", bot, "s1")); err != nil {
		r.t.Fatal(err)
	}
}

// recordless lists what the data root holds for bot while Postgres has
// no record of it: what a mkdir by anyone could be handed.
func recordless(r *rig, bot string) []string {
	r.t.Helper()
	var out []string
	for _, rel := range []string{"bots/" + bot, "snapshots/" + bot} {
		if _, err := os.Lstat(filepath.Join(r.opts.DataRoot, rel)); err != nil {
			continue
		}
		_, err := r.st.GetBot(context.Background(), bot)
		if store.IsNotFound(err) {
			out = append(out, rel)
		} else if err != nil {
			r.t.Fatal(err)
		}
	}
	return out
}

// assertFresh checks bot is secondOwner's with an empty data dir (only an
// empty .skills), and that bot's secret and snapshot data are in the
// trash, once each.
func assertFresh(r *rig, bot string) {
	r.t.Helper()
	dir := r.c.DataDir(bot)
	ents, err := os.ReadDir(dir)
	if err != nil {
		r.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".skills" {
		r.t.Fatalf("%s: data dir of the new bot holds %v, want only .skills", bot, names)
	}
	if skills, _ := os.ReadDir(filepath.Join(dir, ".skills")); len(skills) != 0 {
		r.t.Fatalf("%s: the new bot's .skills is not empty: %v", bot, skills)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Uid != secondOwner {
		r.t.Fatalf("%s: data dir owned by %d (%v), want %d", bot, st.Uid, err, secondOwner)
	}
	if rec, err := r.st.GetBot(r.t.Context(), bot); err != nil || rec.OwnerUID != secondOwner {
		r.t.Fatalf("%s: record %+v %v, want owner %d", bot, rec, err, secondOwner)
	}
	if _, err := os.Stat(filepath.Join(r.opts.DataRoot, "snapshots", bot)); !os.IsNotExist(err) {
		r.t.Fatalf("%s: snapshot data of the old bot still under snapshots/: %v", bot, err)
	}
	trash := filepath.Join(r.opts.DataRoot, "trash")
	secrets, _ := filepath.Glob(filepath.Join(trash, bot+"-*", "data", "secret"))
	snaps, _ := filepath.Glob(filepath.Join(trash, bot+"-*", "snapshots", "s1"))
	if len(secrets) != 1 || len(snaps) != 1 {
		r.t.Fatalf("%s: want the old data and snapshot in the trash once each, got %v and %v", bot, secrets, snaps)
	}
	if b, err := os.ReadFile(secrets[0]); err != nil || string(b) != "secret of "+bot {
		r.t.Fatalf("%s: trashed secret %q %v", bot, b, err)
	}
}

// TestDeleteCrashSafe kills a delete (Options.crashAfter) after each of
// its steps in turn. At no kill point may the data root hold the bot's
// data without its record (which a mkdir by anyone would be handed);
// after the restart another user's mkdir of the name is refused or gets
// an empty data dir, reconcile finishes the delete, and then the mkdir
// gets an empty dir while the old data is in the trash.
func TestDeleteCrashSafe(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	base := r.opts
	refused := 0
	for _, step := range []string{"intent", "runtime", "trash", "record"} {
		bot := "crash-" + step
		plant(r, bot)
		r.opts = control.CrashAfter(base, step)
		r.restart()
		if err := r.c.Delete(ctx, bot); err == nil {
			t.Fatalf("%s: the delete ran past its kill point", step)
		}
		r.c.Close() // the process dies here
		if left := recordless(r, bot); len(left) > 0 {
			t.Fatalf("killed after %s: %v left without a record, for anyone's mkdir", step, left)
		}

		r.opts = base
		r.restart()
		err := r.c.Create(ctx, bot, secondOwner)
		switch {
		case err == nil:
			assertFresh(r, bot)
			continue
		case control.KindOf(err) != control.KindExists:
			t.Fatalf("killed after %s: mkdir by another user: %v", step, err)
		}
		refused++
		rep, err := r.c.Reconcile(context.Background())
		if err != nil || !contains(rep.Finished, bot) || len(rep.Errors) > 0 {
			t.Fatalf("killed after %s: reconcile: %s %v", step, rep, err)
		}
		if err := r.c.Create(ctx, bot, secondOwner); err != nil {
			t.Fatalf("killed after %s: mkdir after reconcile: %v", step, err)
		}
		assertFresh(r, bot)
	}
	if refused != 3 {
		t.Fatalf("mkdir was refused (name still taken) after %d kill points, want 3 (all but the last)", refused)
	}
	if rep, err := r.c.Check(ctx); err != nil || !rep.OK() {
		t.Fatalf("check: %s %v", rep, err)
	}
}

// refuseBotDeletes makes Postgres refuse to delete bot records until the
// returned func is called.
func refuseBotDeletes(r *rig) func() {
	r.t.Helper()
	conn, err := pgx.Connect(r.t.Context(), r.db)
	if err != nil {
		r.t.Fatal(err)
	}
	exec := func(sql string) {
		r.t.Helper()
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			r.t.Fatal(err)
		}
	}
	exec(`CREATE OR REPLACE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'refused for a test'; END $$`)
	exec(`CREATE TRIGGER refuse_delete BEFORE DELETE ON bots FOR EACH ROW EXECUTE FUNCTION refuse_delete()`)
	return func() {
		r.t.Helper()
		exec(`DROP TRIGGER refuse_delete ON bots`)
		conn.Close(context.Background())
	}
}

// TestDeleteRecordRefused: Postgres refuses to drop the record after the
// data went to the trash. The bot is no longer served, its name stays
// taken (for its owner too), check says so; across a restart the same;
// once Postgres takes the delete again, the delete finishes (by itself in
// the process that began it, by reconcile after a restart) and a mkdir
// gets an empty dir.
func TestDeleteRecordRefused(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	for _, restart := range []bool{false, true} {
		bot := "held"
		if restart {
			bot = "held-restarted"
		}
		plant(r, bot)
		allow := refuseBotDeletes(r)
		err := r.c.Delete(ctx, bot)
		if err == nil || !strings.Contains(err.Error(), "refused for a test") {
			t.Fatalf("%s: delete with the record refused: %v", bot, err)
		}
		if _, err := r.c.Status(bot); control.KindOf(err) != control.KindNotFound {
			t.Fatalf("%s: still served after its data went: %v", bot, err)
		}
		if left := recordless(r, bot); len(left) > 0 {
			t.Fatalf("%s: %v left without a record", bot, left)
		}
		if _, err := r.st.GetBot(ctx, bot); err != nil {
			t.Fatalf("%s: the refused record: %v", bot, err)
		}
		for _, owner := range []uint32{secondOwner, firstOwner} {
			if err := r.c.Create(ctx, bot, owner); control.KindOf(err) != control.KindExists {
				t.Fatalf("%s: mkdir by %d while the record stays: %v", bot, owner, err)
			}
		}
		rep, err := r.c.Check(ctx)
		if err != nil || rep.OK() || !strings.Contains(rep.String(), "bot "+bot+": a delete was cut short after its data went to the trash") {
			t.Fatalf("%s: check: %s %v", bot, rep, err)
		}
		if restart {
			r.restart()
			if err := r.c.Create(ctx, bot, secondOwner); control.KindOf(err) != control.KindExists {
				t.Fatalf("%s: mkdir after a restart while the record stays: %v", bot, err)
			}
			for _, e := range r.c.Bots() {
				if e.Name == bot {
					t.Fatalf("%s: served again after a restart", bot)
				}
			}
			rep, err := r.c.Reconcile(context.Background())
			if err != nil || len(rep.Errors) == 0 || contains(rep.Finished, bot) {
				t.Fatalf("%s: reconcile while Postgres refuses: %s %v", bot, rep, err)
			}
			allow()
			rep, err = r.c.Reconcile(context.Background())
			if err != nil || !contains(rep.Finished, bot) || len(rep.Errors) > 0 {
				t.Fatalf("%s: reconcile: %s %v", bot, rep, err)
			}
		} else {
			allow() // the process that began the delete retries it
		}
		testenv.Eventually(t, 30*time.Second, bot+": mkdir once the delete finished", func() bool {
			err := r.c.Create(ctx, bot, secondOwner)
			if control.KindOf(err) == control.KindExists {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			return true
		})
		assertFresh(r, bot)
	}
	if rep, err := r.c.Check(ctx); err != nil || !rep.OK() {
		t.Fatalf("check: %s %v", rep, err)
	}
}

// TestMkdirTrashesStaleData: a data dir and snapshot data a bot of the
// name left without a record (planted here, secret inside) are moved to
// the trash by mkdir, which hands out an empty dir.
func TestMkdirTrashesStaleData(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	bot := "stale"
	root := r.opts.DataRoot
	for p, content := range map[string]string{
		"bots/stale/secret":                  "secret of stale",
		"bots/stale/.skills/old/SKILL.md":    "old skill",
		"snapshots/stale/s1/manifest":        "",
		"bots/stale.restore-x/staged-secret": "staged",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(root, "bots/stale"), firstOwner, firstOwner); err != nil {
		t.Fatal(err)
	}
	if err := r.c.Create(ctx, bot, secondOwner); err != nil {
		t.Fatal(err)
	}
	assertFresh(r, bot)
	staged, _ := filepath.Glob(filepath.Join(root, "trash", "stale-*", "stale.restore-x", "staged-secret"))
	if len(staged) != 1 {
		t.Fatalf("the staged restore was not trashed with the rest: %v", staged)
	}
	if _, err := os.Stat(filepath.Join(root, "bots/stale.restore-x")); !os.IsNotExist(err) {
		t.Fatalf("staged restore left beside the new data dir: %v", err)
	}
}

// TestUnrecordedData: check reports bots/ and snapshots/ entries no record
// owns (in the daemon and as memohfs check runs it, from outside), and
// reconcile moves them to the trash, leaving recorded bots' data alone.
func TestUnrecordedData(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	root := r.opts.DataRoot
	if err := r.c.Create(ctx, "kept", firstOwner); err != nil {
		t.Fatal(err)
	}
	planted := []string{"bots/ghost", "snapshots/ghost2", "bots/ghost3.restore-abc"}
	for _, p := range planted {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p, "f"), []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fromOutside := func() (control.CheckReport, error) {
		return control.CheckFrom(ctx, r.rt, r.st, root, func() []string { return nil },
			func(ctx context.Context, name string) (control.Status, error) { return r.c.Status(name) })
	}
	for how, check := range map[string]func() (control.CheckReport, error){
		"check": func() (control.CheckReport, error) { return r.c.Check(ctx) }, "memohfs check": fromOutside,
	} {
		rep, err := check()
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || len(rep.Problems) != len(planted) {
			t.Fatalf("%s: want %d problems, got %s", how, len(planted), rep)
		}
		for _, p := range planted {
			if !strings.Contains(rep.String(), filepath.Join(root, p)+" has no bot record") {
				t.Fatalf("%s: %s not reported: %s", how, p, rep)
			}
		}
	}
	rep, err := r.c.Reconcile(context.Background())
	if err != nil || len(rep.Trashed) != len(planted) || len(rep.Errors) > 0 {
		t.Fatalf("reconcile: %s %v", rep, err)
	}
	for _, p := range planted {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Fatalf("%s left in place: %v", p, err)
		}
	}
	for _, p := range []string{"ghost-*/data/f", "ghost2-*/snapshots/f", "ghost3-*/ghost3.restore-abc/f"} {
		if m, _ := filepath.Glob(filepath.Join(root, "trash", p)); len(m) != 1 {
			t.Fatalf("trash/%s: %v", p, m)
		}
	}
	if _, err := os.Stat(filepath.Join(r.c.DataDir("kept"), ".skills")); err != nil {
		t.Fatalf("a recorded bot's data was touched: %v", err)
	}
	for how, check := range map[string]func() (control.CheckReport, error){
		"check": func() (control.CheckReport, error) { return r.c.Check(ctx) }, "memohfs check": fromOutside,
	} {
		if rep, err := check(); err != nil || !rep.OK() {
			t.Fatalf("%s after reconcile: %s %v", how, rep, err)
		}
	}
	if rep, _ := r.c.Reconcile(context.Background()); rep.String() != "nothing to do" {
		t.Fatalf("second reconcile: %s", rep)
	}
}
