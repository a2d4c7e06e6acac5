-- Composite search parameters (service/search/composite.py): one row per combination of the component values
-- of one element, so the components of a match come from the same element. `parts` is a JSON array holding
-- each component's row fields by name; a search reads it with jsonb_to_record and the component type's
-- usual conditions. Text, not jsonb, so the stored value reads back exactly as written (a reindex compares them).
CREATE TABLE idx_composite (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    parts   text COLLATE "C" NOT NULL
);
-- Most composites start with a token (a code): searches give its value, so this index finds the rows of one code.
CREATE INDEX idx_composite_first_value ON idx_composite (sp_hash, ((parts::jsonb -> 0) ->> 'value'));
CREATE INDEX idx_composite_res ON idx_composite (res_id);

-- `near` (Location.position): degrees as written. A search narrows by a latitude range (the index), then keeps
-- the rows within the great-circle distance.
CREATE TABLE idx_position (
    res_id    bigint NOT NULL,
    sp_hash   bigint NOT NULL,
    latitude  double precision NOT NULL,
    longitude double precision NOT NULL
);
CREATE INDEX idx_position_coords ON idx_position (sp_hash, latitude, longitude);
CREATE INDEX idx_position_res ON idx_position (res_id);
