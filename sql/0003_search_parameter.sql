-- Custom SearchParameters: an append-only log of their changes. Every create, update or delete of a
-- SearchParameter resource adds a row in the same transaction, with the definition in force after it
-- (NULL when the parameter no longer applies: deleted or retired) and a generation from the sequence.
-- The latest row per resource defines the registry; a row not yet `indexed` means the stored resources
-- of its base types may still carry index rows of an older definition of (base, code): searches with
-- that code are answered with a warning until a reindex covering those types marks the row indexed.
CREATE SEQUENCE search_parameter_generation;

CREATE TABLE search_parameter_change (
    generation bigint PRIMARY KEY DEFAULT nextval('search_parameter_generation'),
    res_id     bigint NOT NULL REFERENCES resource (res_id),
    code       text   NOT NULL,
    base       text[] NOT NULL,
    definition jsonb,
    indexed    boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_parameter_change_res ON search_parameter_change (res_id, generation DESC);
CREATE INDEX search_parameter_change_pending ON search_parameter_change (generation) WHERE NOT indexed;
