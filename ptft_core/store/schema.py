"""The run store's schema as a list of forward migrations.

`MIGRATIONS[i]` takes a database from version `i` to version `i + 1` (version 0 is an empty file). Opening a
database applies every step it has not seen yet, each in its own transaction, and records the new version in
`schema_version`; a database written by a newer ptft (a version above `len(MIGRATIONS)`) is refused rather
than guessed at. Append new steps; never edit a released one.
"""

from __future__ import annotations

# Version 1: the first release's tables.
_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ DEFAULT now());
CREATE TABLE runs (
    id VARCHAR PRIMARY KEY,
    name VARCHAR,
    kind VARCHAR NOT NULL,
    parent_run VARCHAR,
    study VARCHAR,
    config JSON NOT NULL,
    status VARCHAR NOT NULL,
    device VARCHAR,
    pid INTEGER,
    heartbeat TIMESTAMPTZ,
    step BIGINT,
    total_steps BIGINT,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    error VARCHAR,
    tags VARCHAR[] DEFAULT [],
    notes VARCHAR DEFAULT ''
);
CREATE TABLE metrics (
    run_id VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    step BIGINT,
    epoch DOUBLE,
    split VARCHAR,
    name VARCHAR,
    value DOUBLE,
    wall_time DOUBLE,
    tokens_seen BIGINT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE artifacts (
    run_id VARCHAR NOT NULL,
    step BIGINT,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE studies (
    id VARCHAR PRIMARY KEY,
    name VARCHAR,
    template VARCHAR,
    preset VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    config JSON
);
"""

# Version 2: the queue (priority, FIFO time), resume (attempts, superseded rows) and journal tailing offsets.
_V2 = """
ALTER TABLE runs ADD COLUMN priority INTEGER DEFAULT 0;
ALTER TABLE runs ADD COLUMN attempt INTEGER DEFAULT 1;
ALTER TABLE runs ADD COLUMN journal_offset BIGINT DEFAULT 0;
ALTER TABLE runs ADD COLUMN queued_at TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN resume_step BIGINT;
ALTER TABLE metrics ADD COLUMN attempt INTEGER DEFAULT 1;
ALTER TABLE metrics ADD COLUMN superseded BOOLEAN DEFAULT false;
UPDATE runs SET queued_at = created_at;
"""

# Version 3: sweeps (a search over a config space; its trials are runs tagged `sweep:<id>`, its sampler's and
# pruner's state is an Optuna journal under PTFT_HOME/sweeps/<id>/). Runs may end `pruned` (a status, no column).
_V3 = """
CREATE TABLE sweeps (
    id VARCHAR PRIMARY KEY,
    name VARCHAR,
    spec JSON NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    error VARCHAR
);
"""

# Version 4: a running run's pace from its own schedule (its progress events): training steps per second,
# evaluations apart, and the seconds it has left (its remaining steps, evaluations and test at its measured pace).
_V4 = """
ALTER TABLE runs ADD COLUMN train_steps_per_s DOUBLE;
ALTER TABLE runs ADD COLUMN eta_s DOUBLE;
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4]
LATEST = len(MIGRATIONS)
