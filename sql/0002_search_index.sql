-- Search indexes: one table per search parameter type. Every row carries `res_id` (the resource's
-- keyset, also the partitioning key should these tables ever be hash-partitioned) and `sp_hash`, a
-- 64-bit hash of 'ResourceType|code' computed by the application (service/store/indexes.py).
-- Text columns use the "C" collation, so b-tree indexes serve prefix matches (LIKE 'abc%').

CREATE TABLE idx_string (
    res_id     bigint NOT NULL,
    sp_hash    bigint NOT NULL,
    normalized text COLLATE "C" NOT NULL,
    exact      text COLLATE "C" NOT NULL
);
CREATE INDEX idx_string_normalized ON idx_string (sp_hash, normalized);
CREATE INDEX idx_string_exact ON idx_string (sp_hash, exact);
CREATE INDEX idx_string_res ON idx_string (res_id);

CREATE TABLE idx_token (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    system  text COLLATE "C",
    value   text COLLATE "C",
    text    text
);
CREATE INDEX idx_token_value ON idx_token (sp_hash, value, system);
CREATE INDEX idx_token_system ON idx_token (sp_hash, system);
CREATE INDEX idx_token_res ON idx_token (res_id);

CREATE TABLE idx_date (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    low     timestamptz NOT NULL,
    high    timestamptz NOT NULL
);
CREATE INDEX idx_date_low ON idx_date (sp_hash, low);
CREATE INDEX idx_date_high ON idx_date (sp_hash, high);
CREATE INDEX idx_date_res ON idx_date (res_id);

CREATE TABLE idx_number (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    value   numeric NOT NULL
);
CREATE INDEX idx_number_value ON idx_number (sp_hash, value);
CREATE INDEX idx_number_res ON idx_number (res_id);

CREATE TABLE idx_quantity (
    res_id    bigint NOT NULL,
    sp_hash   bigint NOT NULL,
    value     numeric NOT NULL,
    system    text COLLATE "C",
    unit_code text COLLATE "C",
    unit      text
);
CREATE INDEX idx_quantity_value ON idx_quantity (sp_hash, value);
CREATE INDEX idx_quantity_unit ON idx_quantity (sp_hash, unit_code, value);
CREATE INDEX idx_quantity_res ON idx_quantity (res_id);

CREATE TABLE idx_uri (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    uri     text COLLATE "C" NOT NULL
);
CREATE INDEX idx_uri_uri ON idx_uri (sp_hash, uri);
CREATE INDEX idx_uri_res ON idx_uri (res_id);

CREATE TABLE idx_reference (
    res_id      bigint NOT NULL,
    sp_hash     bigint NOT NULL,
    target_type text COLLATE "C",
    target_id   text COLLATE "C",
    target_url  text COLLATE "C"
);
CREATE INDEX idx_reference_target ON idx_reference (sp_hash, target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (sp_hash, target_url);
-- _revinclude and chaining look references up by target, whatever the parameter.
CREATE INDEX idx_reference_by_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_res ON idx_reference (res_id);

-- One row per (resource, parameter) that applies to the resource but produced no value: `:missing`.
CREATE TABLE idx_missing (
    res_id  bigint NOT NULL,
    sp_hash bigint NOT NULL,
    PRIMARY KEY (res_id, sp_hash)
);
CREATE INDEX idx_missing_param ON idx_missing (sp_hash, res_id);
