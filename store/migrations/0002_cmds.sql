-- memohfs schema v2: commands run in bots through cmd/ (an audit trail).

CREATE TABLE cmds (
    bot_id      uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    -- the connection's number under /M/<bot>/cmd/: never reused for a bot
    n           integer NOT NULL CHECK (n > 0),
    exec_id     text NOT NULL CHECK (exec_id <> ''),
    argv        text[] NOT NULL CHECK (cardinality(argv) > 0),
    dir         text NOT NULL,
    -- the host user whose ctl write started it
    uid         bigint NOT NULL CHECK (uid >= 0),
    pid         integer,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at    timestamptz,
    exit_code   integer,
    signal      text,
    -- how it ended: exit, signal, failed (it could not be started; the
    -- reason in error), or lost (its daemon died and nothing knew its
    -- status)
    end_state   text CHECK (end_state IN ('exit', 'signal', 'failed', 'lost')),
    error       text,
    PRIMARY KEY (bot_id, n),
    CONSTRAINT cmd_end_whole CHECK ((ended_at IS NULL) = (end_state IS NULL))
);
-- what a restart must settle
CREATE INDEX cmds_open ON cmds (bot_id) WHERE ended_at IS NULL;
