-- policy_values_write (migration 0200) and policy_values_check (0600) stated
-- the same refusals and the same 'unchanged' rule twice, and 0401's check
-- had already drifted from the write once. The write now takes its verdict
-- from the check, under the write lock, and only writes: one statement of
-- the rules. Same signature and out columns as before, so
-- policy_values_write_batch (0009) is unchanged; for an 'unchanged' write
-- created_at is now left null (the row is named by value_id, value_seq and
-- effective_at, which is all the server reads).
create or replace function policy_values_write(
    p_key text, p_level text, p_scope_id text, p_value jsonb, p_effective_at timestamptz,
    p_reason text, p_old_value jsonb, p_actor text, p_request_id text, p_metadata jsonb,
    out outcome text, out current_value jsonb, out db_now timestamptz,
    out value_id uuid, out value_seq bigint, out effective_at timestamptz, out created_at timestamptz,
    out audit_id uuid, out audit_seq bigint)
language plpgsql as $$
begin
    perform policy_values_write_lock();
    select c.outcome, c.current_value, c.db_now, c.value_id, c.value_seq, c.effective_at
    into outcome, current_value, db_now, value_id, value_seq, effective_at
    from policy_values_check(p_key, p_level, p_scope_id, p_value, p_effective_at, p_old_value) c;
    if outcome <> 'ok' then
        return;
    end if;
    effective_at := greatest(coalesce(p_effective_at, db_now), db_now);
    insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason)
    values (case when p_value is null then 'unset' else 'set' end, p_key, p_level, p_scope_id, p_value,
            policy_values_write.effective_at, p_actor, p_reason)
    returning id, seq, policy_values.created_at into value_id, value_seq, created_at;
    insert into audit_logs (actor, action, policy_key, scope_level, scope_id, effective_at, request_id,
                            value_seq, metadata, prev_hash, hash)
    values (p_actor, case when p_value is null then 'policy_value.unset' else 'policy_value.set' end,
            p_key, p_level, p_scope_id, policy_values_write.effective_at, p_request_id, value_seq,
            p_metadata || jsonb_build_object('old_value', current_value, 'value_id', value_id), '', '')
    returning id, seq into audit_id, audit_seq;
    outcome := 'written';
end
$$;
