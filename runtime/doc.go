// Package runtime drives the container side of memohfs: the bot image,
// one containerd container per bot, its task, its CNI network, live rootfs
// snapshots and task events. It talks to containerd v2 and go-cni and knows
// nothing of SQL or FUSE.
//
// Every bot maps to one container with id "memohfs-<bot>" and label
// memohfs.bot=<bot>. Task state is always read for that one container, never
// picked out of a task list. Errors keep containerd's errdefs classes (not
// found, already exists, failed precondition, invalid argument, unavailable)
// so control can map them to errno without parsing text.
package runtime
