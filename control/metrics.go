package control

import (
	"strings"
	"time"

	"github.com/memohfs/memohfs/store"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are what the controller counts for --metrics (Options.Metrics).
// A nil *metrics counts nothing: every method is safe on nil.
//
//	$ curl -s 127.0.0.1:9464/metrics | grep '^memohfs_ops_total'
//	memohfs_ops_total{result="ok",verb="start"} 3
//	memohfs_ops_total{result="busy",verb="delete"} 1
type metrics struct {
	ops        *prometheus.CounterVec   // verb, result
	opSeconds  *prometheus.HistogramVec // verb
	snapPause  prometheus.Histogram
	snapTotal  prometheus.Histogram
	restores   *prometheus.CounterVec // result
	findings   *prometheus.CounterVec // kind
	trashGone  prometheus.Counter
	trashFails prometheus.Counter
}

// opBuckets span a ctl write: from a refused verb (microseconds) to a
// stop that waits out its grace or a snapshot of a large data dir.
var opBuckets = prometheus.ExponentialBuckets(0.0005, 2.5, 14) // 0.5 ms .. ~75 min

func newMetrics(reg prometheus.Registerer, c *Controller) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "memohfs_ops_total",
			Help: "Operations on bots: ctl verbs (start, stop, snapshot, ...) and the dir operations (create: mkdir /M/<bot>; delete: rmdir /M/<bot>; snapshot: mkdir snapshots/NAME; drop: rmdir snapshots/NAME), by result (ok, or the error kind: invalid, busy, not_found, unavailable, ...; a ctl write its parser refused counts as verb parse)."},
			[]string{"verb", "result"}),
		opSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "memohfs_op_duration_seconds",
			Help: "How long operations on bots took, from the lock taken (or the refusal) to the end.", Buckets: opBuckets},
			[]string{"verb"}),
		snapPause: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "memohfs_snapshot_pause_seconds",
			Help: "How long a snapshot kept the bot's task paused (rootfs diff, changed data files copied).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		snapTotal: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "memohfs_snapshot_duration_seconds",
			Help: "How long a snapshot took in all, recorded.", Buckets: opBuckets}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "memohfs_restores_total",
			Help: "Restores (the restore verb), by result."}, []string{"result"}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "memohfs_reconcile_findings_total",
			Help: "What reconcile found and settled, by kind (recreated, restarted, marked_stopped, corrected, finished, trashed, adopted, dropped, released, orphans, reaped, errors)."},
			[]string{"kind"}),
		trashGone: prometheus.NewCounter(prometheus.CounterOpts{Name: "memohfs_trash_removed_total",
			Help: "Trash entries removed for being older than --trash-keep."}),
		trashFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "memohfs_trash_remove_errors_total",
			Help: "Trash entries --trash-keep could not remove (tried again at the next sweep)."}),
	}
	reg.MustRegister(m.ops, m.opSeconds, m.snapPause, m.snapTotal, m.restores, m.findings, m.trashGone, m.trashFails,
		botStates{c})
	for _, k := range reportKinds {
		m.findings.WithLabelValues(k) // shown at 0 from the start
	}
	return m
}

// result is the result label of an operation's error.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	return strings.ReplaceAll(KindOf(err).String(), " ", "_")
}

func (m *metrics) op(verb string, err error, took time.Duration) {
	if m == nil {
		return
	}
	m.ops.WithLabelValues(verb, result(err)).Inc()
	m.opSeconds.WithLabelValues(verb).Observe(took.Seconds())
}

func (m *metrics) snapshot(paused, took time.Duration) {
	if m == nil {
		return
	}
	m.snapPause.Observe(paused.Seconds())
	m.snapTotal.Observe(took.Seconds())
}

func (m *metrics) restore(err error) {
	if m == nil {
		return
	}
	m.restores.WithLabelValues(result(err)).Inc()
}

// reportKinds name Report's lists, in its order.
var reportKinds = []string{"recreated", "restarted", "marked_stopped", "corrected", "finished", "trashed",
	"adopted", "dropped", "released", "orphans", "reaped", "errors"}

func (m *metrics) reconciled(r Report) {
	if m == nil {
		return
	}
	for i, l := range [][]string{r.Recreated, r.Restarted, r.MarkedStopped, r.Corrected, r.Finished, r.Trashed,
		r.Adopted, r.Dropped, r.Released, r.Orphans, r.Reaped, r.Errors} {
		m.findings.WithLabelValues(reportKinds[i]).Add(float64(len(l)))
	}
}

func (m *metrics) trashRemoved(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.trashFails.Inc()
	} else {
		m.trashGone.Inc()
	}
}

// botStates is memohfs_bots: the bots by state, counted at each scrape
// from memory (no round trip).
type botStates struct{ c *Controller }

var botsDesc = prometheus.NewDesc("memohfs_bots", "Bots by state (created, running, stopped, error, ...).", []string{"state"}, nil)

func (s botStates) Describe(ch chan<- *prometheus.Desc) { ch <- botsDesc }

func (s botStates) Collect(ch chan<- prometheus.Metric) {
	n := map[store.State]int{}
	for _, st := range []store.State{store.StateCreated, store.StateStarting, store.StateRunning, store.StateStopping,
		store.StateStopped, store.StateSnapshotting, store.StateRestoring, store.StateError} {
		n[st] = 0 // every state shown, at 0 too
	}
	s.c.mu.RLock()
	for _, b := range s.c.bots {
		n[b.getState()]++
	}
	s.c.mu.RUnlock()
	for st, k := range n {
		ch <- prometheus.MustNewConstMetric(botsDesc, prometheus.GaugeValue, float64(k), string(st))
	}
}
