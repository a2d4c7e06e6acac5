-- The extractor whose code wrote each resource's index rows (service/search/extractor.py: extraction
-- version, Unicode version, definitions digest, as one number). NULL: written by a release that did not
-- record it. A reindex job re-extracts every code of a resource whose extractor is older than its own.
ALTER TABLE resource ADD COLUMN index_extractor bigint;

-- The state of every live resource's index rows, for two bounded look-ups: the extractors present (a
-- replica starts the reindex an upgrade needs when some are older than its own), and the resources of
-- a type indexed below a generation (what a job's final transaction sweeps). Writes that keep these
-- values (most updates) stay HOT.
CREATE INDEX resource_index_state ON resource (index_extractor, res_type, index_gen) WHERE NOT deleted;

-- What a `$reindex verify=true` job found (service/jobs/verify.py): per resource type and parameter code,
-- how many resources' stored index rows differ from a fresh extraction, with up to 100 examples
-- ({"id": "Type/id", "missing": n, "stray": n}); code '' counts the type's resources that differ at all.
CREATE TABLE job_difference (
    job_id    uuid   NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    res_type  text   NOT NULL,
    code      text   NOT NULL,
    resources bigint NOT NULL,
    examples  jsonb  NOT NULL DEFAULT '[]',
    PRIMARY KEY (job_id, res_type, code)
);
