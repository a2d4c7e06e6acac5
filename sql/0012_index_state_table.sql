-- The state of each live resource's index rows in a narrow table of its own: what a reindex job reads and
-- marks per resource (the catalog generation, fingerprint and extractor its rows were written with, see 0001,
-- 0005 and 0006, and the version they belong to, for optimisticLock). A job marking a resource then writes a
-- row of a few dozen bytes instead of a copy of the resource's body with an entry in each of its indexes.
-- A row exists exactly while its resource is live: a deleted resource has no index rows, so no state.
--
-- The old columns of `resource` keep their index (renamed), for replicas of the previous release during a
-- rolling upgrade; a later release drops both.
ALTER INDEX resource_index_state RENAME TO resource_index_state_legacy;

CREATE TABLE resource_index_state (
    res_id          bigint  PRIMARY KEY REFERENCES resource (res_id) ON DELETE CASCADE,
    res_type        text    NOT NULL,
    version         integer NOT NULL,
    index_gen       bigint  NOT NULL,
    index_hash      bigint,
    index_extractor bigint
) WITH (fillfactor = 70);

-- The two bounded look-ups of service/jobs/index_state.py: the extractors present, and the resources of a
-- type indexed below a generation. A job marking a resource at a new generation adds entries here; writes
-- that keep the generation and the extractor (most updates, a job at the current generation) stay HOT.
CREATE INDEX resource_index_state_lookup ON resource_index_state (index_extractor, res_type, index_gen);

-- Expand first: writers still set resource.index_gen, index_hash and index_extractor, as the previous
-- release does, and these triggers carry every such write into the table (an update always sets the three
-- together; a deletion removes the state). Only a reindex job writes the table alone, so the old columns may
-- lag behind it, never run ahead. A later release writes the table directly and drops the triggers and the
-- old columns, once no replica of this one or the previous one can run.
CREATE FUNCTION resource_index_state_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resource_index_state (res_id, res_type, version, index_gen, index_hash, index_extractor)
    SELECT res_id, res_type, version, index_gen, index_hash, index_extractor FROM inserted WHERE NOT deleted
    ON CONFLICT (res_id) DO UPDATE
    SET version = excluded.version, index_gen = excluded.index_gen, index_hash = excluded.index_hash,
        index_extractor = excluded.index_extractor;
    RETURN NULL;
END $$;

CREATE FUNCTION resource_index_state_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted THEN
        DELETE FROM resource_index_state WHERE res_id = NEW.res_id;
        RETURN NULL;
    END IF;
    INSERT INTO resource_index_state (res_id, res_type, version, index_gen, index_hash, index_extractor)
    VALUES (NEW.res_id, NEW.res_type, NEW.version, NEW.index_gen, NEW.index_hash, NEW.index_extractor)
    ON CONFLICT (res_id) DO UPDATE
    SET version = excluded.version, index_gen = excluded.index_gen, index_hash = excluded.index_hash,
        index_extractor = excluded.index_extractor;
    RETURN NULL;
END $$;

-- One set-based statement per INSERT or COPY (a `load` batch is thousands of rows).
CREATE TRIGGER resource_index_state_insert AFTER INSERT ON resource
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION resource_index_state_inserted();
CREATE TRIGGER resource_index_state_update AFTER UPDATE OF index_gen, index_hash, index_extractor ON resource
    FOR EACH ROW EXECUTE FUNCTION resource_index_state_updated();

-- Carried over after the triggers exist: creating them locked out writers until this transaction commits.
INSERT INTO resource_index_state (res_id, res_type, version, index_gen, index_hash, index_extractor)
SELECT res_id, res_type, version, index_gen, index_hash, index_extractor FROM resource WHERE NOT deleted;
