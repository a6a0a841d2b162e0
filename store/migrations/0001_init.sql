-- memohfs schema v1: bots, their containers, snapshots, versions, events.

CREATE TABLE bots (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE
                 CONSTRAINT bot_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    owner_uid    bigint NOT NULL CHECK (owner_uid >= 0),
    -- the last version handed out; versions only grow, even when
    -- snapshots are dropped
    last_version integer NOT NULL DEFAULT 0 CHECK (last_version >= 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One container per bot (the seed allowed several and read "the latest").
CREATE TABLE containers (
    bot_id       uuid PRIMARY KEY REFERENCES bots (id) ON DELETE CASCADE,
    container_id text NOT NULL UNIQUE,
    image        text NOT NULL,
    snapshotter  text NOT NULL,
    rootfs_key   text,
    -- absolute host path (the seed stored relative ones)
    data_path    text NOT NULL CONSTRAINT data_path_absolute CHECK (data_path LIKE '/%'),
    state        text NOT NULL DEFAULT 'created'
                 CONSTRAINT container_state_valid CHECK (state IN
                 ('created', 'starting', 'running', 'stopping', 'stopped', 'snapshotting', 'restoring', 'error')),
    auto_start   boolean NOT NULL DEFAULT false,
    pid          integer,
    ip           text,
    exit_code    integer,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    stopped_at   timestamptz
);

CREATE TABLE snapshots (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bot_id      uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    name        text NOT NULL
                CONSTRAINT snapshot_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    runtime_key text NOT NULL,
    parent      text,
    source      text NOT NULL CONSTRAINT snapshot_source_valid CHECK (source IN ('manual', 'auto', 'pre_restore')),
    data_path   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bot_id, name),
    UNIQUE (bot_id, runtime_key)
);

CREATE TABLE versions (
    bot_id      uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version > 0),
    snapshot_id uuid NOT NULL UNIQUE REFERENCES snapshots (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, version)
);

CREATE TABLE events (
    id         bigserial PRIMARY KEY,
    bot_id     uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
    type       text NOT NULL CHECK (type <> ''),
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_bot ON events (bot_id, id);
