-- A fingerprint of each resource's index rows (service/search/rows.py `fingerprint`), written by every
-- path that writes the rows. A reindex compares the fingerprint of a fresh extraction with it and
-- rewrites only the resources whose rows differ, without reading their rows back. NULL: not known
-- (rows written before this column existed, or a deleted resource), so the next reindex rewrites them.
ALTER TABLE resource ADD COLUMN index_hash bigint;

-- Leave room on each page written from now on, so that updates of a resource row (a reindex setting
-- index_gen and index_hash, a new version of similar size) can more often be HOT: no new index entries.
ALTER TABLE resource SET (fillfactor = 85);
