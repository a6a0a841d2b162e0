// Package vtree describes memohfs's bot tree once, for every face that
// serves it: the FUSE mount (fsnodes) and 9P2000.L (internal/ninep).
//
//	/M/<bot>/{ctl,status,err,events,log,data/,skills/,snapshots/,cmd/}
//
// A Node says what it is (Attr); a Dir has names (Lookup, List); a File
// opens to a Handle that reads, writes and closes, and says whether it is
// a stream (events, cmd/N/data: read where you are, no seeking) or
// seekable (ctl, status, err, info, log). What a write to ctl does, and
// whether it may, stays control's: a vtree node only calls it.
//
// data/, skills/ and a snapshot's views are Trees: host directories each
// face serves through its own fd-per-file walk (fsnodes' dataNode, or the
// 9P face's fids) over the shared, no-follow, caller-credential calls of
// internal/hostfs.
//
// A face gives each call the caller (WithCaller): the uid that makes a
// bot owns it, and who runs a command.
//
//	$ echo start > /M/b1/ctl        # FUSE: ctlFile.Write → Ctl
//	$ 9p -a unix!/run/memohfs/9p write b1/ctl <<< start   # 9P: the same Write
package vtree
