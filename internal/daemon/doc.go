// Package daemon wires the packages into one memohfs: Serve connects the
// runtime (containerd) and the store (Postgres), loads the bots into a
// control.Controller, mounts the fsnodes tree and serves it until a
// signal; Up first starts a private Postgres and containerd
// (internal/embedded) and the bundled bot image, then serves; Check
// compares, from outside, what a served installation records with what it
// holds. It is what cmd/memohfs calls once it has turned flags into
// Options: the commands parse, this package does.
package daemon
