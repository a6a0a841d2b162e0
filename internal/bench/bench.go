package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const syscallNonblock = syscall.O_NONBLOCK

// row is a line of the report: a workload and its values per target.
type row struct {
	Name    string
	Unit    string
	Higher  bool // higher is better
	Values  map[string][]float64
	Target  string                    // what the issue asks, in words
	Met     func(r *row) (bool, bool) // (met, applicable)
	section string
}

type bench struct {
	o        options
	s        *stack
	sizes    sizes
	rows     []*row
	byName   map[string]*row
	rsyncSrc string
}

func (b *bench) get(name, unit string, higher bool, section string) *row {
	if r, ok := b.byName[name]; ok {
		return r
	}
	r := &row{Name: name, Unit: unit, Higher: higher, Values: map[string][]float64{}, section: section}
	b.byName[name] = r
	b.rows = append(b.rows, r)
	return r
}

// cp records a control-plane value (ms unless the name says otherwise:
// MiB for memory and for what a frozen pass copied).
func (b *bench) cp(name, target string, v float64) {
	unit := "ms"
	switch {
	case strings.Contains(name, "RSS"), strings.HasPrefix(name, "frozen pass copied"):
		unit = "MiB"
	}
	r := b.get(name, unit, false, "control")
	r.Values[target] = append(r.Values[target], v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio is the target's speed as a fraction of native (higher is better).
func (r *row) ratio(target string) float64 {
	n, t := median(r.Values["native"]), median(r.Values[target])
	if n == 0 || t == 0 {
		return 0
	}
	if r.Higher {
		return t / n
	}
	return n / t
}

func run(o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the bench mounts and drops caches: run it as root")
	}
	b := &bench{o: o, sizes: sizesFor(o), byName: map[string]*row{}}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "bench: starting memohfs, the anchor loopback, and the runtime client in %s\n", o.Dir)
	s, err := startStack(o)
	if err != nil {
		return err
	}
	b.s = s
	defer s.stop()
	b.rsyncSrc = filepath.Join(s.dir, "rsync-src")
	if err := rsyncSource(b.rsyncSrc, b.sizes.RsyncFiles); err != nil {
		return err
	}

	suites := []suite{{"seq", seqSuite}, {"small", smallSuite}, {"user", userSuite}, {"rsync", rsyncSuite}, {"saves", savesSuite}, {"stat", statSuite}}
	units := map[string]string{}
	for run := 0; run < o.Runs; run++ {
		for _, su := range suites {
			if o.Only != "" && !strings.Contains(su.Name, o.Only) {
				continue
			}
			ts := s.targets()
			// Rotate the order, so no target always runs first (or last).
			k := (run + len(b.rows)) % len(ts)
			ts = append(ts[k:], ts[:k]...)
			for _, t := range ts {
				fmt.Fprintf(os.Stderr, "bench: run %d/%d %s on %s\n", run+1, o.Runs, su.Name, t.Name)
				// Each target starts on a settled disk: what the one
				// before left dirty (a create's 40 MB, an rm's journal)
				// is written back now, not during this target's run.
				syscall.Sync()
				ms, err := su.Run(b, t)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", su.Name, t.Name, err)
				}
				for _, m := range ms {
					unit, higher := unitOf(m.Name)
					units[m.Name] = unit
					r := b.get(m.Name, unit, higher, "data")
					r.Values[t.Name] = append(r.Values[t.Name], m.Value)
				}
			}
		}
	}
	control := o.Only == "" || strings.Contains("control", o.Only)
	if control {
		reps := o.Runs
		fmt.Fprintln(os.Stderr, "bench: control plane: ctl latency")
		if err := b.ctlLatency(reps); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "bench: control plane: snapshots")
		if err := b.snapshots(reps); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "bench: control plane: bot-side changes")
		if err := b.visibility(max(reps, 10)); err != nil {
			return err
		}
	}
	if control || o.Only == "stat-visible" {
		fmt.Fprintln(os.Stderr, "bench: control plane: bot-side appends seen by stat")
		if err := b.statVisible(statVisibleCount(b.o)); err != nil {
			return err
		}
	}
	if control || o.Only == "cmd" {
		fmt.Fprintln(os.Stderr, "bench: cmd/: exec, stdout, round trips")
		if err := b.cmdRows(max(o.Runs, 10)); err != nil {
			return err
		}
	}
	if control {
		fmt.Fprintf(os.Stderr, "bench: control plane: %d bots\n", o.Bots)
		if err := b.scale(o.Bots); err != nil {
			return err
		}
	}
	// The 9P face against the FUSE mount: after the scale step, whose bots
	// the root listing lists; --only 9p makes them (--bots of them), untimed.
	if control || o.Only == "9p" {
		if !control {
			fmt.Fprintf(os.Stderr, "bench: 9P: making %d bots to list\n", o.Bots)
			if err := b.makeBots(o.Bots); err != nil {
				return err
			}
		}
		fmt.Fprintln(os.Stderr, "bench: 9P against FUSE: ls, status, ctl, data/")
		if err := b.ninePRows(max(o.Runs, 5)); err != nil {
			return err
		}
	}
	b.targetsFor()
	outDir := filepath.Join(o.Out, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	b.markdown(&md, time.Since(start))
	fmt.Print(md.String())
	if err := os.WriteFile(filepath.Join(outDir, "bench.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := b.writeCSV(filepath.Join(outDir, "bench.csv")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: results in %s\n", outDir)
	return nil
}

func unitOf(name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, "seq"):
		return "MiB/s", true
	case strings.HasPrefix(name, "4k"):
		return "IOPS", true
	case strings.HasPrefix(name, "stat"):
		return "ns/op", false
	case strings.HasPrefix(name, "editor"):
		return "saves/s", true
	default:
		return "files/s", true
	}
}

// targetsFor attaches the targets to the rows.
func (b *bench) targetsFor() {
	ratioAtLeast := func(min float64) func(r *row) (bool, bool) {
		return func(r *row) (bool, bool) { return r.ratio("memohfs") >= min, true }
	}
	atMost := func(max float64) func(r *row) (bool, bool) {
		return func(r *row) (bool, bool) { return median(r.Values["memohfs"]) <= max, true }
	}
	for _, r := range b.rows {
		switch {
		case r.Name == "seq write+fsync", r.Name == "seq read cold", r.Name == "4k randread warm":
			r.Target, r.Met = "≥ 0.95", ratioAtLeast(0.95)
		case strings.HasPrefix(r.Name, "create"):
			r.Target, r.Met = "≥ 0.60", ratioAtLeast(0.60)
		case r.Name == "ls -lR warm":
			r.Target, r.Met = "≥ 0.90", ratioAtLeast(0.90)
		case r.Name == "cat all cold":
			r.Target, r.Met = "≥ 0.70", ratioAtLeast(0.70)
		case strings.HasPrefix(r.Name, "rsync -a") && !strings.Contains(r.Name, "no-op"):
			r.Target, r.Met = "≥ 0.75", ratioAtLeast(0.75)
		case r.Name == "rsync -a no-op":
			r.Target, r.Met = "≥ 0.90", ratioAtLeast(0.90)
		case strings.HasPrefix(r.Name, "editor"):
			r.Target, r.Met = "≥ 0.60", ratioAtLeast(0.60)
		case strings.HasPrefix(r.Name, "bot-side"):
			r.Target, r.Met = "≤ 50 ms", atMost(50)
		case r.Name == "echo start > ctl":
			r.Target = "≤ 1.1 × direct"
			r.Met = func(r *row) (bool, bool) {
				return median(r.Values["memohfs"]) <= 1.1*median(r.Values["direct"]), true
			}
		case strings.HasPrefix(r.Name, "snapshot pause") && strings.Contains(r.Name, "rootfs"):
			r.Target, r.Met = "≤ 50 ms", atMost(50)
		case strings.HasPrefix(r.Name, "snapshot pause") && strings.Contains(r.Name, "MB data"):
			var mb float64
			fmt.Sscanf(strings.TrimPrefix(r.Name, "snapshot pause, "), "%f", &mb)
			r.Target, r.Met = fmt.Sprintf("≤ %.0f ms", 50+2*mb), atMost(50+2*mb)
		case strings.HasPrefix(r.Name, "memohfs exec"):
			r.Target = "≤ 1.2 × ctr"
			r.Met = func(r *row) (bool, bool) {
				return median(r.Values["memohfs"]) <= 1.2*median(r.Values["direct"]), true
			}
		case strings.HasPrefix(r.Name, "stdout through data"):
			r.Target = "≥ 500 MiB/s"
			r.Met = func(r *row) (bool, bool) { return median(r.Values["memohfs"]) >= 500, true }
		case strings.HasPrefix(r.Name, "ls /M"):
			r.Target, r.Met = "≤ 20 ms", atMost(20)
		case strings.Contains(r.Name, "RSS"):
			r.Target, r.Met = "≤ 150 MiB", atMost(150)
		}
	}
}

func mark(r *row) string {
	if r.Met == nil {
		return ""
	}
	if ok, _ := r.Met(r); ok {
		return "met"
	}
	return "**missed**"
}

func (b *bench) markdown(w io.Writer, took time.Duration) {
	fmt.Fprintf(w, "\n### Data plane: medians of %d runs, interleaved (ratio = speed as a fraction of native ext4)\n\n", b.o.Runs)
	fmt.Fprint(w, "memohfs: the default data/ path (each bot's data dir bound over data/); FUSE: the fallback (--data-binds=false), a second memohfs.\n\n")
	fmt.Fprintln(w, "| workload | unit | native | stock loopback | memohfs | FUSE | loopback/native | memohfs/native | FUSE/native | FUSE ≥ loopback | target (memohfs) | |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range b.rows {
		if r.section != "data" {
			continue
		}
		beats := "yes"
		if r.ratio("fuse") < r.ratio("anchor") {
			beats = "**no**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f | %s | %s | %s |\n", r.Name, r.Unit,
			num(median(r.Values["native"])), num(median(r.Values["anchor"])), num(median(r.Values["memohfs"])), num(median(r.Values["fuse"])),
			r.ratio("anchor"), r.ratio("memohfs"), r.ratio("fuse"), beats, r.Target, mark(r))
	}
	fmt.Fprintf(w, "\n### Control plane: medians\n\n")
	fmt.Fprint(w, "anchor: the runtime package straight, unless the measure names another.\n\n")
	fmt.Fprintln(w, "| measure | unit | memohfs | anchor | target | |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range b.rows {
		if r.section != "control" {
			continue
		}
		direct := "-"
		if v := r.Values["direct"]; len(v) > 0 {
			direct = num(median(v))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Name, r.Unit, num(median(r.Values["memohfs"])), direct, r.Target, mark(r))
	}
	fmt.Fprintf(w, "\n(bench took %s; sizes: %+v)\n", took.Round(time.Second), b.sizes)
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (b *bench) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"section", "workload", "unit", "target", "run", "value"})
	for _, r := range b.rows {
		names := make([]string, 0, len(r.Values))
		for t := range r.Values {
			names = append(names, t)
		}
		sort.Strings(names)
		for _, t := range names {
			for i, v := range r.Values[t] {
				w.Write([]string{r.section, r.Name, r.Unit, t, fmt.Sprint(i + 1), fmt.Sprintf("%g", v)})
			}
		}
	}
	w.Flush()
	return w.Error()
}
