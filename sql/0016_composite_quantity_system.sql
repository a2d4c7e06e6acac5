-- A code-and-quantity composite search names the code's system as well (`code-value-quantity=
-- http://loinc.org|8867-4$gt119`). idx_composite_quantity (0011) held the code and the value but not the
-- system, so PostgreSQL read every row of the range from the table and parsed its JSON again to compare the
-- system: 5.8 ms for 2,000 rows of one code at 1,000,000 Observations. With the system last in the key it is
-- compared in the index (2.7 ms); a search without a system uses the same index up to the value. Rebuilt
-- without CONCURRENTLY, as migrations run in one transaction: composite writes wait while it builds (about
-- 8 s per 1,000,000 Observations).
DROP INDEX idx_composite_quantity;
CREATE INDEX idx_composite_quantity ON idx_composite
    (sp_hash, ((parts::jsonb -> 0) ->> 'value'), (((parts::jsonb -> 1) ->> 'value')::numeric),
     ((parts::jsonb -> 0) ->> 'system'))
    WHERE (parts::jsonb -> 1) ? 'unit_code';
