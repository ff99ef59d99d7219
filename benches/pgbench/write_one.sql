-- One admin write in autocommit, as the server made them before group
-- commit. pgbench -n -M prepared -c 8 -j 2 -T 8 -f benches/pgbench/write_one.sql
-- against a migrated, seeded database (docs/benchmarks.md).
\set n random(1, 1000000000)
select outcome from policy_values_write('billing.window_seconds', 'org', 'pgb-' || :client_id || '-' || :n, '60'::jsonb,
    null, 'pgbench', '60'::jsonb, 'pgbench', null, '{}'::jsonb);
