package fsnodes

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// The mount's metrics (Options.Metrics):
//
//	$ curl -s 127.0.0.1:9464/metrics | grep -E '^memohfs_(fuse|data|watch)'
//	memohfs_data_io_info{mode="passthrough"} 1
//	memohfs_data_paths{path="bind"} 12
//	memohfs_data_paths{path="fuse"} 0
//	memohfs_fuse_requests_total{opcode="GETATTR"} 5321
//	memohfs_fuse_requests_total{opcode="LOOKUP"} 873
//	memohfs_watch_overflows_total 0
//
// With data/ served by binds and reads and writes passed through, data/
// traffic does not reach memohfs and is not in the FUSE counts.

// fuseOps are the per-opcode counters countFS adds to, resolved once
// (an atomic add per request), and the vector they belong to.
type fuseOps struct {
	vec *prometheus.CounterVec
	n   [numFuseOps]prometheus.Counter
}

func newFuseOps() *fuseOps {
	o := &fuseOps{vec: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "memohfs_fuse_requests_total",
		Help: "FUSE requests memohfs answered, by opcode (WRITE counts write and writev)."}, []string{"opcode"})}
	for op, name := range fuseOpNames {
		o.n[op] = o.vec.WithLabelValues(name)
	}
	return o
}

var (
	dataIODesc = prometheus.NewDesc("memohfs_data_io_info",
		"How data/ file reads and writes go through the FUSE path: passthrough (the kernel reads and writes the host file) or fuse (a round trip each).",
		[]string{"mode"}, nil)
	dataPathsDesc = prometheus.NewDesc("memohfs_data_paths",
		"Bots by how their data/ is served: bind (the kernel serves the data dir) or fuse.", []string{"path"}, nil)
)

// mountCollector reads the mount's state at each scrape.
type mountCollector struct{ r *Root }

func (c mountCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dataIODesc
	ch <- dataPathsDesc
}

func (c mountCollector) Collect(ch chan<- prometheus.Metric) {
	mode, _, _ := strings.Cut(c.r.dataIO, " ")
	ch <- prometheus.MustNewConstMetric(dataIODesc, prometheus.GaugeValue, 1, mode)
	n := map[string]int{"bind": 0, "fuse": 0}
	for _, b := range c.r.c.Bots() {
		path, _, _ := strings.Cut(c.r.dataPath(b.Name), " ")
		n[path]++
	}
	for path, k := range n {
		ch <- prometheus.MustNewConstMetric(dataPathsDesc, prometheus.GaugeValue, float64(k), path)
	}
}

// registerMetrics registers the mount's metrics with reg.
func registerMetrics(reg prometheus.Registerer, r *Root, ops *fuseOps) error {
	overflows := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "memohfs_watch_overflows_total",
		Help: "Times a data/ watcher's inotify queue overflowed (events lost: what the kernel cached of that data/ was dropped and the tree walked again)."},
		func() float64 { return float64(r.watch.overflows.Load()) })
	for _, c := range []prometheus.Collector{ops.vec, mountCollector{r}, overflows} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
