package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/store"
)

func TestMain(m *testing.M) { testenv.Main(m, testenv.Needs{Postgres: true}) }

func open(t *testing.T) *store.Store {
	t.Helper()
	url := testenv.Get(t).Database(t)
	s, err := store.Open(t.Context(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newBot(t *testing.T, s *store.Store, name string) store.Bot {
	t.Helper()
	b, err := s.CreateBot(t.Context(), store.NewBot{
		Name: name, OwnerUID: 1000, ContainerID: "memohfs-" + name, Image: "docker.io/memohfs/bot:dev",
		Snapshotter: "overlayfs", RootfsKey: "memohfs/" + name + "/active/1", DataPath: "/srv/memohfs/" + name,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eventTypes(t *testing.T, s *store.Store, botID string) []string {
	t.Helper()
	evs, err := s.ListEvents(t.Context(), botID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	url := testenv.Get(t).Database(t)
	// Several processes starting at once: the advisory lock serialises them.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.Open(t.Context(), url, store.Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := store.Open(t.Context(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v < 1 {
		t.Fatalf("schema version %d, %v", v, err)
	}
}

func TestBots(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	b := newBot(t, s, "alpha")
	if b.ID == "" || b.Name != "alpha" || b.OwnerUID != 1000 || b.Container.State != store.StateCreated ||
		b.Container.ContainerID != "memohfs-alpha" || b.Container.RootfsKey != "memohfs/alpha/active/1" ||
		b.Container.Pid != 0 || b.Container.ExitCode != nil || b.Container.Started != nil || b.Version != 0 {
		t.Fatalf("new bot: %+v", b)
	}
	got, err := s.GetBot(ctx, "alpha")
	if err != nil || got.ID != b.ID {
		t.Fatalf("get: %+v %v", got, err)
	}

	_, err = s.CreateBot(ctx, store.NewBot{Name: "alpha", ContainerID: "x", Image: "i", Snapshotter: "o", DataPath: "/d"})
	if !store.IsAlreadyExists(err) || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("duplicate bot: %v", err)
	}
	for _, nb := range []store.NewBot{
		{Name: "Bad/Name", ContainerID: "y", Image: "i", Snapshotter: "o", DataPath: "/d"},
		{Name: "relative", ContainerID: "z", Image: "i", Snapshotter: "o", DataPath: "data/relative"},
	} {
		_, err = s.CreateBot(ctx, nb)
		if !store.IsInvalid(err) || !errdefs.IsInvalidArgument(err) {
			t.Fatalf("invalid bot %+v: %v", nb, err)
		}
	}
	_, err = s.GetBot(ctx, "ghost")
	if !store.IsNotFound(err) || !errdefs.IsNotFound(err) {
		t.Fatalf("missing bot: %v", err)
	}
	list, _ := s.ListBots(ctx)
	if len(list) != 1 {
		t.Fatalf("a refused create left a record: %+v", list)
	}

	newBot(t, s, "beta")
	list, err = s.ListBots(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("list: %+v %v", list, err)
	}

	// Transitions, each with its event.
	b, err = s.SetState(ctx, b.ID, store.StateChange{State: store.StateRunning, Pid: 4242, IP: "10.0.0.2",
		Started: true, Event: &store.Event{Type: "start", Payload: map[string]any{"pid": 4242}}})
	if err != nil {
		t.Fatal(err)
	}
	c := b.Container
	if c.State != store.StateRunning || c.Pid != 4242 || c.IP != "10.0.0.2" || c.Started == nil || c.Stopped != nil {
		t.Fatalf("running: %+v", c)
	}
	code := 137
	b, err = s.SetState(ctx, b.ID, store.StateChange{State: store.StateStopped, ExitCode: &code, Stopped: true,
		Event: &store.Event{Type: "stop"}})
	if err != nil {
		t.Fatal(err)
	}
	c = b.Container
	if c.State != store.StateStopped || c.Pid != 0 || c.IP != "" || c.ExitCode == nil || *c.ExitCode != 137 ||
		c.Stopped == nil || c.Started == nil {
		t.Fatalf("stopped: %+v", c)
	}
	_, err = s.SetState(ctx, b.ID, store.StateChange{State: "dancing"})
	if !store.IsInvalid(err) {
		t.Fatalf("bad state: %v", err)
	}
	_, err = s.SetState(ctx, "00000000-0000-0000-0000-000000000000", store.StateChange{State: store.StateRunning})
	if !store.IsNotFound(err) {
		t.Fatalf("state of a missing bot: %v", err)
	}
	_, err = s.SetState(ctx, "not-a-uuid", store.StateChange{State: store.StateRunning})
	if !store.IsInvalid(err) {
		t.Fatalf("state of a malformed id: %v", err)
	}

	if err := s.SetRootfs(ctx, b.ID, "memohfs/alpha/active/2", &store.Event{Type: "restore"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAutoStart(ctx, b.ID, true); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetBot(ctx, "alpha")
	if got.Container.RootfsKey != "memohfs/alpha/active/2" || !got.Container.AutoStart {
		t.Fatalf("rootfs/auto_start: %+v", got.Container)
	}
	if err := s.SetAutoStart(ctx, "00000000-0000-0000-0000-000000000000", true); !store.IsNotFound(err) {
		t.Fatalf("auto_start of a missing bot: %v", err)
	}
	if err := s.SetRootfs(ctx, "00000000-0000-0000-0000-000000000000", "k", nil); !store.IsNotFound(err) {
		t.Fatalf("rootfs of a missing bot: %v", err)
	}
	if got := fmt.Sprint(eventTypes(t, s, b.ID)); got != "[create start stop restore]" {
		t.Fatalf("events: %s", got)
	}

	// Delete cascades to snapshots, versions and events.
	if _, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{RuntimeKey: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBot(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBot(ctx, b.ID); !store.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
	if snaps, _ := s.ListSnapshots(ctx, b.ID); len(snaps) != 0 {
		t.Fatalf("snapshots outlived their bot: %+v", snaps)
	}
	if evs := eventTypes(t, s, b.ID); len(evs) != 0 {
		t.Fatalf("events outlived their bot: %v", evs)
	}
	// The name is free again.
	newBot(t, s, "alpha")
}

func TestSnapshots(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	b := newBot(t, s, "snappy")
	if v, err := s.NextVersion(ctx, b.ID); err != nil || v != 1 {
		t.Fatalf("next version %d %v", v, err)
	}
	s1, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{RuntimeKey: "memohfs/snappy/snap/v1",
		Parent: "sha256:base", DataPath: "/srv/snaps/snappy/v1"})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Name != "v1" || s1.Version != 1 || s1.Source != store.SourceManual || s1.Parent != "sha256:base" ||
		s1.DataPath != "/srv/snaps/snappy/v1" || s1.BotID != b.ID {
		t.Fatalf("s1: %+v", s1)
	}
	s2, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{Name: "golden", RuntimeKey: "memohfs/snappy/snap/golden",
		Parent: s1.RuntimeKey, Source: store.SourcePreRestore})
	if err != nil || s2.Version != 2 || s2.Name != "golden" || s2.Source != store.SourcePreRestore {
		t.Fatalf("s2: %+v %v", s2, err)
	}

	// A taken name records nothing and uses up no version.
	_, err = s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{Name: "golden", RuntimeKey: "memohfs/snappy/snap/other"})
	if !store.IsAlreadyExists(err) || !errdefs.IsAlreadyExists(err) {
		t.Fatalf("taken name: %v", err)
	}
	_, err = s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{Name: "dup-key", RuntimeKey: s1.RuntimeKey})
	if !store.IsAlreadyExists(err) {
		t.Fatalf("taken runtime key: %v", err)
	}
	for _, bad := range []store.NewSnapshot{
		{Name: "../etc", RuntimeKey: "k-bad1"},
		{Name: "ok", RuntimeKey: "k-bad2", Source: "whim"},
	} {
		if _, err := s.CreateSnapshot(ctx, b.ID, bad); !store.IsInvalid(err) {
			t.Fatalf("invalid snapshot %+v: %v", bad, err)
		}
	}
	_, err = s.CreateSnapshot(ctx, "00000000-0000-0000-0000-000000000000", store.NewSnapshot{RuntimeKey: "k"})
	if !store.IsNotFound(err) {
		t.Fatalf("snapshot of a missing bot: %v", err)
	}
	s3, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{RuntimeKey: "memohfs/snappy/snap/v3", Source: store.SourceAuto})
	if err != nil || s3.Version != 3 || s3.Name != "v3" {
		t.Fatalf("after refusals: %+v %v", s3, err)
	}

	got, err := s.GetSnapshot(ctx, b.ID, "golden")
	if err != nil || got.ID != s2.ID || got.Version != 2 {
		t.Fatalf("get: %+v %v", got, err)
	}
	got, err = s.GetVersion(ctx, b.ID, 1)
	if err != nil || got.ID != s1.ID {
		t.Fatalf("get version: %+v %v", got, err)
	}
	if _, err := s.GetSnapshot(ctx, b.ID, "nope"); !store.IsNotFound(err) {
		t.Fatalf("missing snapshot: %v", err)
	}
	if _, err := s.GetVersion(ctx, b.ID, 99); !store.IsNotFound(err) {
		t.Fatalf("missing version: %v", err)
	}

	// Dropping a snapshot never frees its version for reuse.
	if err := s.DeleteSnapshot(ctx, b.ID, "v3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, b.ID, "v3"); !store.IsNotFound(err) {
		t.Fatalf("second drop: %v", err)
	}
	s4, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{RuntimeKey: "memohfs/snappy/snap/v4"})
	if err != nil || s4.Version != 4 || s4.Name != "v4" {
		t.Fatalf("after a drop: %+v %v", s4, err)
	}
	list, err := s.ListSnapshots(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sn := range list {
		names = append(names, fmt.Sprintf("%s@%d", sn.Name, sn.Version))
	}
	if fmt.Sprint(names) != "[v1@1 golden@2 v4@4]" {
		t.Fatalf("list: %v", names)
	}
	bot, _ := s.GetBot(ctx, "snappy")
	if bot.Version != 4 || bot.Snapshots != 3 {
		t.Fatalf("bot version %d snapshots %d", bot.Version, bot.Snapshots)
	}
	if got := fmt.Sprint(eventTypes(t, s, b.ID)); got != "[create snapshot snapshot snapshot snapshot-drop snapshot]" {
		t.Fatalf("events: %s", got)
	}
}

// TestVersionsConcurrent: concurrent snapshots of one bot get distinct,
// gap-free versions.
func TestVersionsConcurrent(t *testing.T) {
	t.Parallel()
	s := open(t)
	b := newBot(t, s, "busy")
	const n = 20
	var wg sync.WaitGroup
	versions := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sn, err := s.CreateSnapshot(t.Context(), b.ID, store.NewSnapshot{RuntimeKey: fmt.Sprintf("k%d", i)})
			if err != nil {
				t.Error(err)
				return
			}
			versions <- sn.Version
		}()
	}
	wg.Wait()
	close(versions)
	var got []int
	for v := range versions {
		got = append(got, v)
	}
	sort.Ints(got)
	for i, v := range got {
		if v != i+1 {
			t.Fatalf("versions %v", got)
		}
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	b := newBot(t, s, "chatty")
	var ids []int64
	for i := range 5 {
		ev, err := s.AddEvent(ctx, b.ID, store.Event{Type: "note", Payload: map[string]any{"i": i, "s": "x y"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	evs, err := s.ListEvents(ctx, b.ID, ids[1], 2)
	if err != nil || len(evs) != 2 || evs[0].ID != ids[2] || evs[1].ID != ids[3] {
		t.Fatalf("page: %+v %v", evs, err)
	}
	if evs[0].Payload["s"] != "x y" || evs[0].Payload["i"] != float64(2) || evs[0].Time.IsZero() {
		t.Fatalf("payload: %+v", evs[0])
	}
	if !evs[0].Time.Before(evs[1].Time) && !evs[0].Time.Equal(evs[1].Time) {
		t.Fatalf("event times go backwards: %v %v", evs[0].Time, evs[1].Time)
	}
	last, err := s.LastEvent(ctx, b.ID)
	if err != nil || last.ID != ids[4] || last.Payload["i"] != float64(4) {
		t.Fatalf("last event: %+v %v", last, err)
	}
	if _, err := s.LastEvent(ctx, "00000000-0000-0000-0000-000000000000"); !store.IsNotFound(err) {
		t.Fatalf("last event of a missing bot: %v", err)
	}
	if _, err := s.AddEvent(ctx, b.ID, store.Event{}); !store.IsInvalid(err) {
		t.Fatalf("empty event type: %v", err)
	}
	if _, err := s.AddEvent(ctx, "00000000-0000-0000-0000-000000000000", store.Event{Type: "x"}); !store.IsNotFound(err) {
		t.Fatalf("event of a missing bot: %v", err)
	}
}

// TestUnavailable: no server, or a server that goes away and comes back.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	env := testenv.Get(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	nowhere := fmt.Sprintf("host=%s user=postgres dbname=x sslmode=disable", filepath.Join(env.TempDir(t), "none"))
	_, err := store.Open(ctx, nowhere, store.Options{ConnectTimeout: time.Second})
	if !store.IsUnavailable(err) || !errdefs.IsUnavailable(err) {
		t.Fatalf("open without a server: %v", err)
	}
	if _, err := store.Open(ctx, "postgres://%zz", store.Options{}); !store.IsInvalid(err) {
		t.Fatalf("malformed url: %v", err)
	}

	pg := env.NewPostgres(t)
	s, err := store.Open(ctx, pg.Database(t, "outage"), store.Options{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := newBot(t, s, "steady")
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBot(ctx, "steady"); !store.IsUnavailable(err) {
		t.Fatalf("read during the outage: %v", err)
	}
	if _, err := s.CreateSnapshot(ctx, b.ID, store.NewSnapshot{RuntimeKey: "k"}); !store.IsUnavailable(err) {
		t.Fatalf("write during the outage: %v", err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	// The same Store recovers by itself.
	got, err := s.GetBot(ctx, "steady")
	if err != nil || got.ID != b.ID || got.Version != 0 {
		t.Fatalf("after the outage: %+v %v", got, err)
	}
}
