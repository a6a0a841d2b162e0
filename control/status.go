package control

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/memohfs/memohfs/store"
)

// Status is the live state of a bot, as the status file shows it.
type Status struct {
	Name        string
	ID          string
	Owner       uint32
	State       store.State
	Pid         int
	IP          string
	Image       string
	Container   string
	Snapshotter string
	Created     time.Time
	Started     *time.Time
	Stopped     *time.Time
	Exit        *int
	Snapshots   int
	Version     int
}

// String renders status as `key value` lines, in a fixed order, with `-`
// for an empty value and RFC3339 times.
func (s Status) String() string {
	var b strings.Builder
	kv := func(k, v string) {
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(&b, "%s %s\n", k, v)
	}
	num := func(n int) string {
		if n == 0 {
			return ""
		}
		return strconv.Itoa(n)
	}
	tm := func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	kv("name", s.Name)
	kv("id", s.ID)
	kv("state", string(s.State))
	kv("pid", num(s.Pid))
	kv("ip", s.IP)
	kv("image", s.Image)
	kv("container", s.Container)
	kv("snapshotter", s.Snapshotter)
	kv("created", tm(&s.Created))
	kv("started", tm(s.Started))
	kv("stopped", tm(s.Stopped))
	exit := ""
	if s.Exit != nil {
		exit = strconv.Itoa(*s.Exit)
	}
	kv("exit", exit)
	kv("snapshots", strconv.Itoa(s.Snapshots))
	kv("version", strconv.Itoa(s.Version))
	return b.String()
}

func (b *bot) status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.rec.Container
	return Status{
		Name: b.name, ID: b.rec.ID, Owner: uint32(b.rec.OwnerUID), State: b.state, Pid: b.pid, IP: b.ip,
		Image: c.Image, Container: c.ContainerID, Snapshotter: c.Snapshotter,
		Created: b.rec.Created, Started: b.started, Stopped: b.stopped, Exit: b.exit,
		Snapshots: b.rec.Snapshots, Version: b.rec.Version,
	}
}

// ParseStatus reads what Status.String wrote (a status file), for tools
// outside the daemon. Unknown keys are skipped, so newer daemons can add
// keys.
func ParseStatus(text string) (Status, error) {
	var s Status
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			return s, errorf(KindInvalid, "status line %d: want `key value`, got %q", i+1, truncate(line, 80))
		}
		if v == "-" {
			v = ""
		}
		num := func() (int, error) {
			if v == "" {
				return 0, nil
			}
			return strconv.Atoi(v)
		}
		tm := func() (*time.Time, error) {
			if v == "" {
				return nil, nil
			}
			t, err := time.Parse(time.RFC3339, v)
			return &t, err
		}
		var err error
		switch k {
		case "name":
			s.Name = v
		case "id":
			s.ID = v
		case "state":
			s.State = store.State(v)
		case "pid":
			s.Pid, err = num()
		case "ip":
			s.IP = v
		case "image":
			s.Image = v
		case "container":
			s.Container = v
		case "snapshotter":
			s.Snapshotter = v
		case "created":
			var t *time.Time
			if t, err = tm(); t != nil {
				s.Created = *t
			}
		case "started":
			s.Started, err = tm()
		case "stopped":
			s.Stopped, err = tm()
		case "exit":
			if v != "" {
				var n int
				n, err = strconv.Atoi(v)
				s.Exit = &n
			}
		case "snapshots":
			s.Snapshots, err = num()
		case "version":
			s.Version, err = num()
		}
		if err != nil {
			return s, errorf(KindInvalid, "status line %d (%s): %v", i+1, k, err)
		}
	}
	return s, nil
}
