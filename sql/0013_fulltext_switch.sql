-- Full-text search can be switched off (`python -m service fulltext off`): its trigger costs about ten
-- times what the rest of a resource row's COPY costs, and HAPI ships with full-text search off. The state
-- is the database's, not a replica's, so every replica answers `_text` and `_content` alike:
--   on:       the triggers of 0010 keep resource_text, and searches use it;
--   off:      the triggers are disabled and resource_text is empty; `_text` and `_content` are refused;
--   building: the triggers are enabled again and resource_text is being filled for the rows written while
--             it was off; searches refuse it until `fulltext on` has finished (or is run again after a crash).
CREATE TABLE fulltext_search (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    state     text    NOT NULL CHECK (state IN ('on', 'off', 'building'))
);
INSERT INTO fulltext_search (state) VALUES ('on');
