package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memohfs/memohfs/internal/testenv"
)

// TestMetrics: `memohfs up --metrics` serves Prometheus metrics, and
// `curl -s ADDR/metrics | grep memohfs_` shows what the tree did: the
// bots by state, the ctl verbs by result, a snapshot's pause and total, a
// restore, reconcile's findings, the FUSE requests by opcode, how data/
// is served, the trash removals (--trash-keep 2s), and Go's own
// collectors beside them.
func TestMetrics(t *testing.T) {
	state, mnt := upInstance(t)
	d := startUp(t, state, mnt, "--metrics", "127.0.0.1:0", "--trash-keep", "2s", "--log-format", "json")
	defer d.stop()
	url := metricsURL(t, d.log)

	sh(t, fmt.Sprintf(`set -e
		mkdir %[1]s/mx
		echo start > %[1]s/mx/ctl
		echo 'snapshot s1' > %[1]s/mx/ctl
		echo 'restore s1' > %[1]s/mx/ctl
		! echo frobnicate > %[1]s/mx/ctl 2>/dev/null
		ls -l %[1]s/mx/data > /dev/null`, mnt))
	m := scrape(t, url)
	want := map[string]float64{
		`memohfs_bots{state="running"}`:                     1,
		`memohfs_bots{state="stopped"}`:                     0,
		`memohfs_ops_total{result="ok",verb="create"}`:      1,
		`memohfs_ops_total{result="ok",verb="start"}`:       1,
		`memohfs_ops_total{result="ok",verb="snapshot"}`:    1, // s1: restore's pre-restore-<version> is no verb of its own
		`memohfs_ops_total{result="ok",verb="restore"}`:     1,
		`memohfs_ops_total{result="invalid",verb="parse"}`:  1,
		`memohfs_op_duration_seconds_count{verb="start"}`:   1,
		`memohfs_snapshot_pause_seconds_count`:              2, // s1 and pre-restore-1
		`memohfs_snapshot_duration_seconds_count`:           2,
		`memohfs_restores_total{result="ok"}`:               1,
		`memohfs_reconcile_findings_total{kind="errors"}`:   0,
		`memohfs_data_paths{path="` + dataPathWord() + `"}`: 1,
		`memohfs_trash_removed_total`:                       0,
		`memohfs_watch_overflows_total`:                     0,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for _, k := range []string{`memohfs_fuse_requests_total{opcode="MKDIR"}`, `memohfs_fuse_requests_total{opcode="LOOKUP"}`,
		`memohfs_fuse_requests_total{opcode="WRITE"}`, `go_goroutines`, `process_open_fds`} {
		if m[k] < 1 {
			t.Errorf("%s = %v, want at least 1", k, m[k])
		}
	}
	if m[`memohfs_data_io_info{mode="passthrough"}`]+m[`memohfs_data_io_info{mode="fuse"}`] != 1 {
		t.Errorf("memohfs_data_io_info names no mode")
	}

	// Delete: the data goes to the trash, and --trash-keep 2s removes it.
	sh(t, fmt.Sprintf(`set -e
		echo stop > %[1]s/mx/ctl
		rmdir %[1]s/mx`, mnt))
	testenv.Eventually(t, time.Minute, "the trash entry is removed and counted", func() bool {
		return scrape(t, url)[`memohfs_trash_removed_total`] == 1
	})
	m = scrape(t, url)
	if m[`memohfs_ops_total{result="ok",verb="delete"}`] != 1 || m[`memohfs_bots{state="running"}`] != 0 {
		t.Errorf("after rmdir: delete ok %v, running %v", m[`memohfs_ops_total{result="ok",verb="delete"}`], m[`memohfs_bots{state="running"}`])
	}
	entries, _ := os.ReadDir(filepath.Join(state, "data", "trash"))
	if len(entries) != 0 {
		t.Errorf("trash still holds %d entries", len(entries))
	}
}

// dataPathWord is how this run serves data/, as memohfs_data_paths names it.
func dataPathWord() string {
	if testenv.DataBinds() {
		return "bind"
	}
	return "fuse"
}

// metricsURL reads the address --metrics 127.0.0.1:0 got from up's log,
// written with --log-format json: one JSON object per line.
func metricsURL(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	url := ""
	for _, l := range strings.Split(string(b), "\n") {
		var rec struct{ Msg, URL, Level string }
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "metrics" && rec.Level == "INFO" {
			url = rec.URL
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no metrics url in the JSON log:\n%s", b)
	}
	return url
}

// scrape runs curl -s URL | grep '^memohfs_\|^go_\|^process_' and parses
// the samples.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	out := sh(t, "curl -sf "+url+` | grep -E '^(memohfs|go|process)_'`)
	m := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", l, err)
		}
		m[l[:i]] = v
	}
	return m
}
