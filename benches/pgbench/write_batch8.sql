-- Eight admin writes in one call, as the server's group commit sends them.
-- pgbench -n -M prepared -c 1 -T 8 -f benches/pgbench/write_batch8.sql
-- against a migrated, seeded database (docs/benchmarks.md).
\set n random(1, 1000000000)
select count(*) from policy_values_write_batch(
    array_fill('billing.window_seconds'::text, array[8]), array_fill('org'::text, array[8]),
    (select array_agg('pgb-' || g || '-' || :client_id || '-' || :n) from generate_series(1, 8) g),
    array_fill('60'::jsonb, array[8]), array_fill(null::timestamptz, array[8]), array_fill('pgbench'::text, array[8]),
    array_fill('60'::jsonb, array[8]), array_fill('pgbench'::text, array[8]), array_fill(null::text, array[8]),
    array_fill('{}'::jsonb, array[8]));
