-- Full-text search (`_text`, `_content`): one row per live resource with two tsvectors of the 'simple'
-- configuration (lower-cased words, no stemming, no stop words): `narrative` from `text.div` (the parser
-- drops the XHTML tags and entities), `content` from every string value of the resource (narrative included).
--
-- A trigger on `resource` keeps it: every path that writes a body (REST, Bundles, `load`'s COPY, which fires
-- row triggers) writes the row in the same transaction, and a deletion (body NULL) removes it. `$reindex`
-- does not touch bodies, so it has nothing to redo here.
CREATE TABLE resource_text (
    res_id    bigint   PRIMARY KEY REFERENCES resource (res_id) ON DELETE CASCADE,
    narrative tsvector NOT NULL,
    content   tsvector NOT NULL
);
CREATE INDEX resource_text_narrative ON resource_text USING gin (narrative);
CREATE INDEX resource_text_content ON resource_text USING gin (content);

-- The body as jsonb, or NULL when jsonb refuses it: bodies are orjson's UTF-8 output, and the only JSON
-- that jsonb refuses is a \u0000 escape, which only the slow path (a subtransaction) has to catch.
CREATE FUNCTION resource_body_jsonb(body bytea) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    source text := convert_from(body, 'UTF8');
BEGIN
    IF strpos(source, '\u0000') = 0 THEN
        RETURN source::jsonb;
    END IF;
    BEGIN
        RETURN source::jsonb;
    EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
        RETURN NULL;
    END;
END $$;

-- A tsvector holds at most 1 MB, which the words of a large body can overflow (an error, so the write would
-- fail): a body over 200,000 bytes is searchable by the first 100,000 characters of its narrative and of its
-- JSON text (keys included). Below that size the vectors stay well under the limit.
CREATE FUNCTION resource_text_vectors(document jsonb, body_bytes integer, OUT narrative tsvector,
                                      OUT content tsvector) LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF body_bytes <= 200000 THEN
        narrative := to_tsvector('simple', coalesce(document #>> '{text,div}', ''));
        content := jsonb_to_tsvector('simple', document, '["string"]');
    ELSE
        narrative := to_tsvector('simple', left(coalesce(document #>> '{text,div}', ''), 100000));
        content := to_tsvector('simple', left(document::text, 100000));
    END IF;
END $$;

CREATE FUNCTION resource_text_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    document jsonb := resource_body_jsonb(NEW.body);
BEGIN
    IF document IS NULL THEN
        DELETE FROM resource_text WHERE res_id = NEW.res_id;
        RETURN NULL;
    END IF;
    INSERT INTO resource_text (res_id, narrative, content)
    SELECT NEW.res_id, v.narrative, v.content FROM resource_text_vectors(document, length(NEW.body)) AS v
    ON CONFLICT (res_id) DO UPDATE SET narrative = EXCLUDED.narrative, content = EXCLUDED.content;
    RETURN NULL;
END $$;

CREATE TRIGGER resource_text_insert AFTER INSERT ON resource
    FOR EACH ROW EXECUTE FUNCTION resource_text_write();
CREATE TRIGGER resource_text_update AFTER UPDATE OF body ON resource
    FOR EACH ROW WHEN (OLD.body IS DISTINCT FROM NEW.body) EXECUTE FUNCTION resource_text_write();

INSERT INTO resource_text (res_id, narrative, content)
SELECT res_id, (v).narrative, (v).content
FROM (SELECT res_id, resource_text_vectors(resource_body_jsonb(body), length(body)) AS v
      FROM resource WHERE body IS NOT NULL) AS bodies
WHERE v IS NOT NULL;
