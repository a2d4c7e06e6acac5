-- The job engine's state: Postgres is the coordinator, so any replica can run, answer for, or cancel
-- any job. A job is split into chunks, each a res_id range of one resource type; a worker claims a
-- chunk under a lease, processes it in batches, and advances `checkpoint` in the same transaction as
-- each batch's writes, so a crash loses at most one batch and another worker resumes from there.
CREATE TABLE job (
    id                 uuid PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('reindex')),
    parameters         jsonb NOT NULL,
    -- Identical requests while one is running share its job.
    fingerprint        text NOT NULL,
    state              text NOT NULL DEFAULT 'queued'
                       CHECK (state IN ('queued', 'in_progress', 'finalizing', 'completed', 'failed', 'cancelled')),
    cancel_requested   boolean NOT NULL DEFAULT false,
    -- The catalog generation the job indexes with: custom parameter changes up to it become indexed.
    catalog_generation bigint NOT NULL,
    -- Whether the job covers every resource of its types (no search filter): only then can it clear
    -- pending search parameters.
    full_coverage      boolean NOT NULL,
    total_estimate     bigint NOT NULL DEFAULT 0,
    created_by         text,
    created_by_type    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    ended_at           timestamptz,
    report             text,
    error              text
);
CREATE UNIQUE INDEX job_running_fingerprint ON job (fingerprint)
    WHERE state IN ('queued', 'in_progress', 'finalizing');

CREATE TABLE job_chunk (
    job_id      uuid    NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    res_type    text    NOT NULL,
    lo          bigint  NOT NULL,  -- exclusive lower bound of res_id
    hi          bigint  NOT NULL,  -- inclusive upper bound of res_id
    checkpoint  bigint  NOT NULL,  -- the last res_id whose batch is written (lo before the first)
    state       text    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done')),
    owner       text,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    processed   bigint  NOT NULL DEFAULT 0,
    changed     bigint  NOT NULL DEFAULT 0,
    unchanged   bigint  NOT NULL DEFAULT 0,
    failed      bigint  NOT NULL DEFAULT 0,
    failures    jsonb   NOT NULL DEFAULT '[]',  -- up to 100 {"id": "Type/id", "reason": "..."}
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_chunk_claimable ON job_chunk (job_id, seq) WHERE state <> 'done';

-- Planning walks each type's res_ids as a keyset.
CREATE INDEX resource_type_res_id ON resource (res_type, res_id);
