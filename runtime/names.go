package runtime

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

const (
	// ContainerPrefix starts every bot container id.
	ContainerPrefix = "memohfs-"
	// LabelBot marks containers and snapshots with their bot.
	LabelBot = "memohfs.bot"
	// LabelData records the host data dir of a container.
	LabelData = "memohfs.data"
	// LabelNetNS and LabelIP record the network of a running container, so
	// it can be released after a daemon restart.
	LabelNetNS = "memohfs.netns"
	LabelIP    = "memohfs.ip"
	// LabelSnapshot and LabelCreated mark committed snapshots.
	LabelSnapshot = "memohfs.snapshot"
	LabelCreated  = "memohfs.created"
	labelGCRoot   = "containerd.io/gc.root"
)

var (
	botNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	snapNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// ValidBotName reports whether name is a valid bot name.
func ValidBotName(name string) bool { return botNameRE.MatchString(name) }

// ValidSnapshotName reports whether name is a valid snapshot name.
func ValidSnapshotName(name string) bool { return snapNameRE.MatchString(name) }

func checkBot(bot string) error {
	if !ValidBotName(bot) {
		return fmt.Errorf("bot name %q: want [a-z0-9][a-z0-9_-]{0,62}: %w", bot, errdefs.ErrInvalidArgument)
	}
	return nil
}

func checkSnapshot(name string) error {
	if !ValidSnapshotName(name) {
		return fmt.Errorf("snapshot name %q: want [A-Za-z0-9][A-Za-z0-9._-]{0,127}: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ContainerID is the container id of a bot.
func ContainerID(bot string) string { return ContainerPrefix + bot }

// BotOf returns the bot of a container id, or "" for a foreign container.
func BotOf(containerID string) string {
	bot, ok := strings.CutPrefix(containerID, ContainerPrefix)
	if !ok || !ValidBotName(bot) {
		return ""
	}
	return bot
}

// snapshot keys: committed snapshots, active rootfs generations and
// temporary apply targets live under the bot's own prefix.
func snapKey(bot, name string) string  { return "memohfs/" + bot + "/snap/" + name }
func activeKey(bot, gen string) string { return "memohfs/" + bot + "/active/" + gen }
func applyKey(bot, gen string) string  { return "memohfs/" + bot + "/apply/" + gen }
func snapNameOf(bot, key string) string {
	name, ok := strings.CutPrefix(key, "memohfs/"+bot+"/snap/")
	if !ok {
		return ""
	}
	return name
}

// rootfsLabels mark a bot's active rootfs. It is a GC root: a rootfs must
// outlive the loss of its container, so the container can be made again
// on it (the seed lost data when a rebuild started from scratch).
func rootfsLabels(bot string) map[string]string {
	return map[string]string{LabelBot: bot, labelGCRoot: time.Now().UTC().Format(time.RFC3339Nano)}
}
