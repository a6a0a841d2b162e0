package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/memohfs/memohfs/control"
	"github.com/memohfs/memohfs/runtime"
	"github.com/memohfs/memohfs/store"
)

// Check checks, from outside the daemon and changing nothing, the
// installation o describes: it connects to o's containerd and Postgres
// and runs control.CheckOutside on them, o's data root and, if o.Mount is
// set, that mount.
func Check(ctx context.Context, o Options) (control.CheckReport, error) {
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
	dataRoot, err := filepath.Abs(o.DataRoot)
	if err != nil {
		return control.CheckReport{}, err
	}
	rep, err := control.CheckOutside(ctx, rt, st, dataRoot, o.Mount)
	if err != nil {
		return rep, err
	}
	trash, err := control.MeasureTrash(dataRoot)
	if err != nil {
		return rep, fmt.Errorf("trash: %w", err)
	}
	rep.Trash = &trash
	return rep, nil
}
