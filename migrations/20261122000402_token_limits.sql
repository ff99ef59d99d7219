-- Tokens limited to keys and levels (governance, issue 11): an admin token
-- may be restricted to key patterns ('billing.*') and to levels ('org',
-- 'user'); it may then write, preview and decide change requests only for
-- matching keys at those levels. Null: no limit (every token made before).
alter table api_tokens
    add column key_patterns text[]
        constraint api_tokens_key_patterns_shape check (
            key_patterns is null or (cardinality(key_patterns) > 0
                and array_position(key_patterns, null) is null)),
    add column levels text[]
        constraint api_tokens_levels_valid check (
            levels is null or (cardinality(levels) > 0
                and levels <@ array['global', 'plan', 'org', 'project', 'user']::text[]));
