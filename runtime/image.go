package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// EnsureImage makes the configured image present and unpacked.
func (c *Containerd) EnsureImage(ctx context.Context) (_ ImageInfo, err error) {
	defer native(&err)
	ctx = c.ns(ctx)
	ref := c.cfg.Image
	info := ImageInfo{Name: ref, Snapshotter: c.cfg.Snapshotter}
	img, err := c.client.GetImage(ctx, ref)
	switch {
	case err == nil:
	case !errdefs.IsNotFound(err):
		return info, fmt.Errorf("image %s: %w", ref, err)
	case c.cfg.ImageArchive != "":
		img, err = c.importArchive(ctx)
		if err != nil {
			return info, err
		}
		info.Imported = true
	default:
		img, err = c.client.Pull(ctx, ref,
			containerd.WithPullUnpack, containerd.WithPullSnapshotter(c.cfg.Snapshotter))
		if err != nil {
			return info, fmt.Errorf("pull image %s: %w", ref, err)
		}
	}
	unpacked, err := img.IsUnpacked(ctx, c.cfg.Snapshotter)
	if err != nil {
		return info, fmt.Errorf("image %s: %w", ref, err)
	}
	if !unpacked {
		if err := img.Unpack(ctx, c.cfg.Snapshotter); err != nil {
			return info, fmt.Errorf("unpack image %s into %s: %w", ref, c.cfg.Snapshotter, err)
		}
	}
	info.Digest = img.Target().Digest.String()
	return info, nil
}

func (c *Containerd) importArchive(ctx context.Context) (containerd.Image, error) {
	ref, archive := c.cfg.Image, c.cfg.ImageArchive
	f, err := os.Open(archive)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("image archive %s: %w", archive, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("image archive: %w", err)
	}
	defer f.Close()
	imgs, err := c.client.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", archive, err)
	}
	var names []string
	for _, im := range imgs {
		if im.Name == ref {
			return c.client.GetImage(ctx, ref)
		}
		names = append(names, im.Name)
	}
	return nil, fmt.Errorf("image %s is not in archive %s (it holds: %s): %w",
		ref, archive, strings.Join(names, ", "), errdefs.ErrNotFound)
}
