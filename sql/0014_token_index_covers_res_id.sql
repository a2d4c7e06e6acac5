-- A token search (`identifier`, `_id`, a code) chooses its page from idx_token's rows before it reads any
-- resource (service/search/sql.py), and all it needs of a row is its res_id. With res_id in the index the
-- matches are read from the index alone (an index-only scan, on the pages VACUUM has marked all-visible)
-- instead of one random read of the table per match: a code of 200 Organizations scattered over 1,000,000
-- read 204 pages before, 9 after (1.3 to 1.7 ms per page of 20 instead of 2.2 to 4.4 ms, on a busy machine).
-- The index keeps its name and key columns; it grows by res_id (8 bytes an entry). Migrations run in one
-- transaction (service/db.py), so it is rebuilt without CONCURRENTLY: token writes wait while it builds
-- (about 20 s per 8,000,000 token rows).
DROP INDEX idx_token_value;
CREATE INDEX idx_token_value ON idx_token (sp_hash, value, system) INCLUDE (res_id);
