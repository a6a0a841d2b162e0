package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
)

// HalfDeleteTask leaves the task of container id (in namespace ns) as a
// client killed in the middle of deleting it does: it asks the task's
// shim itself, not containerd, to delete the container. containerd then
// still holds the task and its shim keeps running, but cannot describe
// it: TaskService().Get and Task answer NotFound, `ctr tasks ls` leaves
// it out, and a new task for the container is refused AlreadyExists.
// The task's process must have exited or never been started (a task
// created and not started will do). It returns the pid of the shim,
// which stays running.
func HalfDeleteTask(ctx context.Context, ns, id string) (shimPid int, err error) {
	shims := ShimsOf(ns, id)
	if len(shims) != 1 {
		return 0, fmt.Errorf("want one shim of %s in namespace %s, found %v", id, ns, shims)
	}
	shimPid = shims[0]
	// The shim's working dir is its bundle, which holds its address.
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(shimPid), "cwd", "bootstrap.json"))
	if err != nil {
		return 0, fmt.Errorf("bundle of shim %d: %w", shimPid, err)
	}
	var boot struct{ Address, Protocol string }
	if err := json.Unmarshal(b, &boot); err != nil {
		return 0, fmt.Errorf("bootstrap.json of shim %d: %w", shimPid, err)
	}
	if boot.Protocol != "" && boot.Protocol != "ttrpc" {
		return 0, fmt.Errorf("shim %d speaks %q, not ttrpc", shimPid, boot.Protocol)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(boot.Address, "unix://"))
	if err != nil {
		return 0, fmt.Errorf("dial shim %d: %w", shimPid, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := taskapi.NewTTRPCTaskClient(client).Delete(cctx, &taskapi.DeleteRequest{ID: id}); err != nil {
		return 0, fmt.Errorf("delete %s in its shim %d: %w", id, shimPid, err)
	}
	return shimPid, nil
}

// ShimsOf lists the pids of the live shims of container id in namespace
// ns, by their command lines.
func ShimsOf(ns, id string) []int {
	var out []int
	for _, p := range listProcs() {
		args := strings.Fields(p.cmd)
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		if flagValue(args, "-namespace") == ns && flagValue(args, "-id") == id {
			out = append(out, p.pid)
		}
	}
	return out
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
