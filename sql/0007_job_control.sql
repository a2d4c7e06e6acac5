-- Pausing and throttling a job while it runs (service/jobs/control.py, service/jobs/throttle.py).
ALTER TABLE job
    -- When the job was paused; NULL: it is not. A paused job's chunks are not claimed, and a worker holding
    -- one hands it back at its next batch or heartbeat.
    ADD COLUMN paused_at       timestamptz,
    -- Seconds the job has spent paused since it started: its rate and time left leave them out.
    ADD COLUMN paused_seconds  double precision NOT NULL DEFAULT 0,
    -- Resources per second over every worker of every replica; NULL: unthrottled.
    ADD COLUMN throttle_rate   integer CHECK (throttle_rate > 0),
    -- The throttle's token bucket: tokens left at `throttle_at`; it refills at `throttle_rate` up to half a
    -- second's worth, and a worker takes tokens for each batch before writing it.
    ADD COLUMN throttle_tokens double precision NOT NULL DEFAULT 0,
    ADD COLUMN throttle_at     timestamptz NOT NULL DEFAULT now();
