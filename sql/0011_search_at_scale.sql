-- `_sort=_lastUpdated` and `_sort=-_lastUpdated` (service/search/sql.py: the sort key, then res_id ascending,
-- nulls last): an index in exactly each order, so a page walks the newest (or oldest) live resources of its type
-- and stops after `_count` matches instead of sorting every match. A backward page walks the same index backwards.
-- Migrations run in one transaction (service/db.py), so these cannot be built CONCURRENTLY: building them locks
-- writes to `resource` for as long as it takes (seconds per million resources).
CREATE INDEX resource_type_last_updated ON resource (res_type, last_updated, res_id) WHERE NOT deleted;
CREATE INDEX resource_type_last_updated_desc ON resource (res_type, last_updated DESC NULLS LAST, res_id)
    WHERE NOT deleted;

-- A composite whose first component is a code and whose second is a quantity (`code-value-quantity` and the
-- `component-` and `combo-` ones): a search gives both, so the rows of one code in a value range are one index range
-- instead of every row of the code. Only quantity parts have a `unit_code` key; their values are numbers as
-- idx_quantity stores them. The statistics of the indexed expressions come from ANALYZE.
CREATE INDEX idx_composite_quantity ON idx_composite
    (sp_hash, ((parts::jsonb -> 0) ->> 'value'), (((parts::jsonb -> 1) ->> 'value')::numeric))
    WHERE (parts::jsonb -> 1) ? 'unit_code';
ANALYZE idx_composite;
