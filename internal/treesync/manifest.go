package treesync

import (
	"encoding/gob"
	"os"
	"path/filepath"
)

// Manifest maps each regular file of a finished copy (path relative to the
// root) to the signature its source had. Files whose signature was racy
// are left out, so the next copy does not trust them. The paths are only
// keys: they are never handed to the kernel, so they may be longer than
// PATH_MAX.
type Manifest map[string]Sig

// Save writes the manifest atomically.
func (m Manifest) Save(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".manifest-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := gob.NewEncoder(f).Encode(m); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// LoadManifest reads a manifest written by Save.
func LoadManifest(path string) (Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := Manifest{}
	return m, gob.NewDecoder(f).Decode(&m)
}
