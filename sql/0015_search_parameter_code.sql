-- When each custom (code, base) was first in force: no resource indexed at an earlier catalog generation can
-- have index rows of that code on that base. A reindex after a new parameter then writes the new rows without
-- first looking for stored ones in every index table (service/jobs/reindex_batch.py).
--
-- The change log cannot tell this: its compaction (service/store/change_log.py) deletes old changes. A row here
-- is never deleted. Those existing before this migration are dated 0 ("rows may exist from any generation"),
-- as the log they are read from may be compacted already. A trigger keeps the table, so a replica of the
-- previous release that records a change during a rolling upgrade keeps it too; changes are serialised by the
-- change log's lock, so the first row inserted for a pair carries its earliest generation.
CREATE TABLE search_parameter_code (
    code       text   NOT NULL,
    base       text   NOT NULL,
    introduced bigint NOT NULL,
    PRIMARY KEY (code, base)
);

INSERT INTO search_parameter_code (code, base, introduced)
SELECT DISTINCT code, unnest(base), 0 FROM search_parameter_change;

CREATE FUNCTION search_parameter_code_introduced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_parameter_code (code, base, introduced)
    SELECT NEW.code, unnest(NEW.base), NEW.generation
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER search_parameter_code_introduced AFTER INSERT ON search_parameter_change
FOR EACH ROW WHEN (NEW.definition IS NOT NULL) EXECUTE FUNCTION search_parameter_code_introduced();
