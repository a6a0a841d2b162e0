package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// statVisibleBot is the bot of the stat-visibility rows (its own, so the
// rows can run alone: `bench run --only stat-visible`).
const statVisibleBot = "statvis"

// statVisible: how long an append the bot makes to a file the kernel
// holds in its cache (for an hour, DataTTL) takes to show through a stat
// of data/ (never a read): the median and the 99th percentile over n
// appends. The bot appends 2 bytes n times, 20 ms apart, in one exec;
// the bench stats the file through data/ and then on the host, in turn,
// every 0.2 ms. The k-th append was made after the last host stat that
// did not show it, and is seen at the first data/ stat whose size covers
// it: the lag between the two is an upper bound, within one poll round.
// A stat that fails, or an append never seen within 30 s, fails the run.
func (b *bench) statVisible(n int) error {
	s := b.s
	ctx := context.Background()
	if err := os.Mkdir(filepath.Join(s.mnt, statVisibleBot), 0o755); err != nil {
		return err
	}
	if _, err := s.ctl(statVisibleBot, "start"); err != nil {
		return err
	}
	data := filepath.Join(s.mnt, statVisibleBot, "data", "f")
	host := filepath.Join(s.state, "data", "bots", statVisibleBot, "f")
	if _, err := s.inside.Exec(ctx, statVisibleBot, []string{"sh", "-c", ": > /data/f"}, nil, nil); err != nil {
		return err
	}
	if fi, err := os.Stat(data); err != nil || fi.Size() != 0 { // the kernel now holds it
		return fmt.Errorf("data/f after the bot made it: %v %v", fi, err)
	}

	script := "i=0; while [ $i -lt " + strconv.Itoa(n) + " ]; do echo x >> /data/f; sleep 0.02; i=$((i+1)); done"
	errc := make(chan error, 1)
	prevHost := time.Now() // no append is made before the exec starts
	go func() {
		_, err := s.inside.Exec(ctx, statVisibleBot, []string{"sh", "-c", script}, nil, nil)
		errc <- err
	}()
	made := make([]time.Time, n) // append k made after this host stat
	seen := make([]time.Time, n) // append k first seen through data/ at
	hostHas, dataHas := 0, 0     // appends the last stats showed
	var deadline time.Time       // set when the bot is done
	for dataHas < n {
		td := time.Now()
		fiData, err := os.Stat(data)
		if err != nil {
			return fmt.Errorf("stat through data/: %w", err)
		}
		th := time.Now()
		fiHost, err := os.Stat(host)
		if err != nil {
			return fmt.Errorf("stat of the host file: %w", err)
		}
		for ; dataHas < int(fiData.Size()/2) && dataHas < n; dataHas++ {
			seen[dataHas] = td
		}
		for ; hostHas < int(fiHost.Size()/2) && hostHas < n; hostHas++ {
			made[hostHas] = prevHost
		}
		prevHost = th
		if deadline.IsZero() {
			select {
			case err := <-errc:
				if err != nil {
					return fmt.Errorf("the bot's appends: %w", err)
				}
				deadline = time.Now().Add(30 * time.Second)
			default:
			}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("data/ showed %d of the bot's %d appends 30 s after the last (the host %d)", dataHas, n, hostHas)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if deadline.IsZero() {
		if err := <-errc; err != nil {
			return fmt.Errorf("the bot's appends: %w", err)
		}
	}
	lags := make([]float64, n)
	for k := range n {
		lags[k] = ms(max(seen[k].Sub(made[k]), 0))
	}
	slices.Sort(lags)
	name := fmt.Sprintf("bot-side append seen by stat, %%s of %d", n)
	b.cp(fmt.Sprintf(name, "median"), "memohfs", median(lags))
	b.cp(fmt.Sprintf(name, "p99"), "memohfs", lags[(99*n+99)/100-1]) // nearest rank
	return nil
}

// statVisibleCount is how many appends statVisible measures: 200, 50
// with --quick.
func statVisibleCount(o options) int {
	if o.Quick {
		return 50
	}
	return 200
}
