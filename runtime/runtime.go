package runtime

import (
	"context"
	"io"
	"time"
)

// Runtime is everything control needs from the container runtime. All
// methods take a bot name; the container id and snapshot keys are derived
// from it.
type Runtime interface {
	// EnsureImage makes the configured image present and unpacked into the
	// configured snapshotter: from the store, else imported from the
	// configured archive, else pulled.
	EnsureImage(ctx context.Context) (ImageInfo, error)

	// Create makes the bot's container (not started). AlreadyExists if the
	// bot has one; the existing container is never touched.
	Create(ctx context.Context, spec BotSpec) (ContainerInfo, error)
	// Container describes the bot's container; NotFound if there is none.
	Container(ctx context.Context, bot string) (ContainerInfo, error)
	// Containers lists every container carrying the memohfs.bot label.
	Containers(ctx context.Context) ([]ContainerInfo, error)
	// Delete removes the container, its rootfs and every snapshot of the
	// bot. FailedPrecondition while the task runs.
	Delete(ctx context.Context, bot string) error

	// Start sets up the network and starts the task; a running task is left
	// alone and described.
	Start(ctx context.Context, bot string) (TaskInfo, error)
	// Stop sends SIGTERM, waits up to grace, then SIGKILLs every process of
	// the container; the task is deleted and the network released. Stopping
	// a stopped bot releases leftovers and succeeds.
	Stop(ctx context.Context, bot string, grace time.Duration) (TaskInfo, error)
	// Task reads the state of the bot's own task.
	Task(ctx context.Context, bot string) (TaskInfo, error)
	// EndLeftoverTask kills and deletes the bot's task, with its shim,
	// unless it is live (running or paused): a task created and never
	// started, stopped, in an unknown state, or held by containerd but
	// not described by its shim (what a kill -9 in the middle of a
	// delete leaves; Task calls it none). With no task in containerd, it
	// ends a shim and runc container of the bot that run without
	// containerd knowing (what a kill -9 in the middle of a create can
	// leave). It says what it ended, "" for nothing.
	EndLeftoverTask(ctx context.Context, bot string) (string, error)
	// Exec runs a process in the running task and returns its exit code.
	Exec(ctx context.Context, bot string, args []string, stdout, stderr io.Writer) (int, error)
	// ExecStart starts a process in the running task and hands over its
	// streams; killing it reaches every process it starts.
	ExecStart(ctx context.Context, bot string, spec ExecSpec) (*Proc, error)
	// EndExec ends a process an earlier daemon started and lost, with
	// its tree, and says how it ended.
	EndExec(ctx context.Context, bot, id string) (ExitInfo, error)

	// Snapshot takes a live snapshot of the bot's rootfs under name. The
	// container keeps its own rootfs; a running task is frozen only for
	// the last, incremental pass (rootfs and opts.Sync).
	Snapshot(ctx context.Context, bot, name string, opts SnapshotOptions) (SnapshotInfo, error)
	// Snapshots lists the bot's snapshots and the lineage of its rootfs.
	Snapshots(ctx context.Context, bot string) ([]SnapshotInfo, error)
	// RemoveSnapshot drops one named snapshot. FailedPrecondition while
	// another snapshot or the rootfs is based on it.
	RemoveSnapshot(ctx context.Context, bot, name string) error
	// Restore points the bot's container at a fresh rootfs made from the
	// named snapshot. FailedPrecondition while the task runs.
	Restore(ctx context.Context, bot, name string) (ContainerInfo, error)
	// MountSnapshot mounts a read-only view of the named snapshot and
	// returns its directory; mounting a mounted one returns the same dir.
	MountSnapshot(ctx context.Context, bot, name string) (string, error)
	// UnmountSnapshot unmounts and removes that view, if there is one.
	UnmountSnapshot(ctx context.Context, bot, name string) error
	// UnmountAll unmounts every snapshot view (at shutdown).
	UnmountAll(ctx context.Context) error

	// Events streams task events of memohfs containers. The event channel
	// closes when ctx ends or the subscription breaks; the error channel
	// then says why (nil error after ctx ends).
	Events(ctx context.Context) (<-chan Event, <-chan error)

	// ReleaseNetworkLeaks frees IPAM leases and netns pins no running task
	// uses, and says what it freed.
	ReleaseNetworkLeaks(ctx context.Context) ([]string, error)
	// RemoveLeftovers removes the bot's leftover snapshots (see
	// SnapshotInfo.Role) and returns their keys.
	RemoveLeftovers(ctx context.Context, bot string) ([]string, error)
	// NetworkLeaks lists what ReleaseNetworkLeaks would free.
	NetworkLeaks(ctx context.Context) ([]string, error)

	// LogPath is the host file receiving the bot's stdout and stderr.
	LogPath(bot string) string
	// Defaults says which image and snapshotter new bots get.
	Defaults() (image, snapshotter string)

	Close() error
}

// BotSpec says what container to create for a bot.
type BotSpec struct {
	Bot     string
	DataDir string            // absolute host dir, bind-mounted rw at /data
	Args    []string          // process args; the image's when empty
	Env     []string          // extra KEY=VALUE
	Labels  map[string]string // extra container labels
	// FromSnapshot creates the rootfs from this bot's named snapshot
	// instead of from the image.
	FromSnapshot string
	// RootfsKey re-attaches the rootfs the bot had (a container lost
	// while its active snapshot survived) when that snapshot still
	// exists; otherwise the rootfs is made as above.
	RootfsKey string
}

// ImageInfo describes the bot image.
type ImageInfo struct {
	Name        string
	Digest      string
	Snapshotter string
	Imported    bool // imported from the archive by this call
}

// ContainerInfo describes a bot's container.
type ContainerInfo struct {
	Bot         string
	ID          string
	Image       string
	Snapshotter string
	RootfsKey   string // the active snapshot the container runs on
	DataDir     string
	Labels      map[string]string
	Created     time.Time
	NetNS       string // pinned netns path while the network is up
	IP          string
}

// TaskState is the state of a bot's task.
type TaskState string

const (
	TaskNone    TaskState = "none" // no task: created or stopped and cleaned up
	TaskCreated TaskState = "created"
	TaskRunning TaskState = "running"
	TaskPaused  TaskState = "paused"
	TaskStopped TaskState = "stopped" // exited; the task entry still exists
	TaskUnknown TaskState = "unknown"
)

// TaskInfo is the state of one bot's task.
type TaskInfo struct {
	Bot         string
	ContainerID string
	State       TaskState
	Pid         uint32
	ExitCode    uint32
	ExitedAt    time.Time
	HasExited   bool   // ExitCode and ExitedAt are meaningful
	IP          string // set while the network is up
}

// SnapshotOptions tune a snapshot.
type SnapshotOptions struct {
	Labels map[string]string // extra labels (memohfs.* by convention)
	// Sync, when set, copies whatever else must be captured at the same
	// instant as the rootfs: it runs beside each rootfs pass while the
	// task runs (final false, once or more), then once with the task
	// frozen (final true), where it should copy only what changed since
	// its last call. An error aborts the snapshot.
	Sync func(ctx context.Context, final bool) error
}

// SnapshotInfo describes one snapshot in a bot's lineage.
type SnapshotInfo struct {
	Name    string // memohfs snapshot name; empty for image layers and the rootfs
	Key     string // containerd snapshot key
	Parent  string // parent key; empty at the bottom of the chain
	Kind    string // committed | active | view
	Created time.Time
	Labels  map[string]string
	// Role: "snapshot" (a named memohfs snapshot), "rootfs" (the container's
	// active rootfs), "image" (an image layer the rootfs builds on), "view"
	// (a read-only view of a snapshot) or "leftover" (the bot's, but none
	// of these: what a crash mid-snapshot or mid-restore leaves).
	Role string
	// Lineage lists parent keys from the nearest to the image base.
	Lineage []string
	// Paused is how long the task was frozen while the snapshot was
	// taken (0 when it did not run); set by Snapshot.
	Paused time.Duration
}

// EventType names a task event.
type EventType string

const (
	EventStart  EventType = "start"
	EventExit   EventType = "exit"
	EventOOM    EventType = "oom"
	EventPaused EventType = "paused"
	EventResume EventType = "resumed"
	EventDelete EventType = "delete"
)

// Event is one task event of a bot's init process.
type Event struct {
	Type        EventType
	Bot         string
	ContainerID string
	Pid         uint32
	ExitCode    uint32
	Time        time.Time
}
