-- No-op writes. A write whose value is already the one stored at that exact
-- scope (and whose old_value matches) inserted a value row and an audit
-- record that changed nothing: history and the audit log filled with noise,
-- and every follower was woken for nothing. Such a write now answers
-- 'unchanged' and writes nothing; the out columns name the row already in
-- force (value_id, value_seq, effective_at, created_at; audit_id and
-- audit_seq stay null).
--
-- "Already stored" is strict: the row in force at this exact scope at the
-- write's effective time is the row in force now (no change is scheduled
-- at this scope before the write would take effect) and holds this value.
-- A value inherited from a wider level is not stored here: writing it at
-- this scope pins it, and is a change. Removals keep their rule: removing
-- where nothing is stored is already refused as 'not_overridden'.
--
-- Replaces policy_values_write (migration 0008) with the same signature and
-- out columns, so policy_values_write_batch (0009), which calls it, answers
-- 'unchanged' for such writes too.
create or replace function policy_values_write(
    p_key text, p_level text, p_scope_id text, p_value jsonb, p_effective_at timestamptz,
    p_reason text, p_old_value jsonb, p_actor text, p_request_id text, p_metadata jsonb,
    out outcome text, out current_value jsonb, out db_now timestamptz,
    out value_id uuid, out value_seq bigint, out effective_at timestamptz, out created_at timestamptz,
    out audit_id uuid, out audit_seq bigint)
language plpgsql as $$
declare
    replaced jsonb;
    found_here boolean;
    here_id uuid;
    here_seq bigint;
    here_value jsonb;
    here_effective_at timestamptz;
    here_created_at timestamptz;
begin
    perform policy_values_write_lock();
    db_now := clock_timestamp();
    if p_effective_at < db_now - interval '60 seconds' then
        outcome := 'effective_at_in_past';
        return;
    end if;
    effective_at := greatest(coalesce(p_effective_at, db_now), db_now);
    -- Statements written out here, not in a helper SQL function: PL/pgSQL
    -- keeps their plans for the session, a SQL function is planned per call.
    select h.value into replaced from policy_value_history h
    where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id and h.effective_at <= db_now
    order by h.effective_at desc, h.seq desc limit 1;
    if replaced is null then
        select h.value into replaced from policy_value_history h
        where h.key = p_key and h.level = 'global' and h.scope_id = '' and h.effective_at <= db_now
        order by h.effective_at desc, h.seq desc limit 1;
    end if;
    if replaced is null then
        select k.default_value into replaced from policy_keys k where k.key = p_key;
    end if;
    current_value := replaced;
    if replaced is distinct from p_old_value then
        outcome := 'stale_old_value';
        return;
    end if;
    if p_value is null then
        select h.value is not null into found_here from policy_value_history h
        where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id
          and h.effective_at <= policy_values_write.effective_at
        order by h.effective_at desc, h.seq desc limit 1;
        if found_here is not true then
            outcome := 'not_overridden';
            return;
        end if;
    else
        select h.id, h.seq, h.value, h.effective_at, h.created_at
        into here_id, here_seq, here_value, here_effective_at, here_created_at
        from policy_value_history h
        where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id
          and h.effective_at <= policy_values_write.effective_at
        order by h.effective_at desc, h.seq desc limit 1;
        if here_seq is not null and here_effective_at <= db_now and here_value = p_value then
            outcome := 'unchanged';
            value_id := here_id;
            value_seq := here_seq;
            effective_at := here_effective_at;
            created_at := here_created_at;
            return;
        end if;
    end if;
    insert into policy_values (kind, key, level, scope_id, value, effective_at, actor, reason)
    values (case when p_value is null then 'unset' else 'set' end, p_key, p_level, p_scope_id, p_value,
            policy_values_write.effective_at, p_actor, p_reason)
    returning id, seq, policy_values.created_at into value_id, value_seq, created_at;
    insert into audit_logs (actor, action, policy_key, scope_level, scope_id, effective_at, request_id,
                            value_seq, metadata, prev_hash, hash)
    values (p_actor, case when p_value is null then 'policy_value.unset' else 'policy_value.set' end,
            p_key, p_level, p_scope_id, policy_values_write.effective_at, p_request_id, value_seq,
            p_metadata || jsonb_build_object('old_value', replaced, 'value_id', value_id), '', '')
    returning id, seq into audit_id, audit_seq;
    outcome := 'written';
end
$$;
