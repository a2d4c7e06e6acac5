-- `_sort=_lastUpdated` and `_sort=-_lastUpdated` (service/search/sql.py: the sort key, then res_id ascending,
-- nulls last): an index in exactly each order, so a page walks the newest (or oldest) live resources of its type
-- and stops after `_count` matches instead of sorting every match. A backward page walks the same index backwards.
-- Migrations run in one transaction (service/db.py), so these cannot be built CONCURRENTLY: building them locks
-- writes to `resource` for as long as it takes (seconds per million resources).
CREATE INDEX resource_type_last_updated ON resource (res_type, last_updated, res_id) WHERE NOT deleted;
CREATE INDEX resource_type_last_updated_desc ON resource (res_type, last_updated DESC NULLS LAST, res_id)
    WHERE NOT deleted;
