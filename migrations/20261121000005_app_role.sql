-- The role the server should run as (see docs/operations.md). It may read
-- and append, never rewrite: no UPDATE, DELETE or TRUNCATE on the value rows
-- or the audit log, and it owns nothing, so it cannot drop the triggers that
-- build the hash chain. Roles are cluster-wide: create it once, tolerate a
-- concurrent migration of another database having just done so.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'policy_values_app') then
        create role policy_values_app nologin;
    end if;
exception when duplicate_object or unique_violation then
    null;
end
$$;

grant select, insert on policy_values, audit_logs to policy_values_app;
grant select on policy_value_history, policy_values_live to policy_values_app;
grant select, insert, update on policy_keys, api_tokens to policy_values_app;
grant usage on sequence policy_values_seq, audit_logs_seq to policy_values_app;
grant select on _sqlx_migrations to policy_values_app;
