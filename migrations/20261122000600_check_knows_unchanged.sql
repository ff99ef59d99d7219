-- policy_values_check (migration 0401) made the refusals of the write
-- function of migration 0008 but not the 'unchanged' outcome migration 0200
-- added: a preview of a write of the value already stored at its scope said
-- the write would be made, and a change request was opened for a change
-- that changes nothing. The check now answers 'unchanged' by the write's
-- own rule (0200): the row in force at this exact scope at the write's
-- effective time is the row in force now and holds this value. Then the out
-- columns name that row (value_id, value_seq, effective_at), as the write's
-- do. Same arguments; new out columns, so the function is made again.
drop function policy_values_check(text, text, text, jsonb, timestamptz, jsonb);

create function policy_values_check(
    p_key text, p_level text, p_scope_id text, p_value jsonb, p_effective_at timestamptz, p_old_value jsonb,
    out outcome text, out current_value jsonb, out db_now timestamptz,
    out value_id uuid, out value_seq bigint, out effective_at timestamptz)
language plpgsql stable as $$
declare
    effective timestamptz;
    found_here boolean;
    here_id uuid;
    here_seq bigint;
    here_value jsonb;
    here_effective_at timestamptz;
begin
    db_now := clock_timestamp();
    if p_effective_at < db_now - interval '60 seconds' then
        outcome := 'effective_at_in_past';
        return;
    end if;
    effective := greatest(coalesce(p_effective_at, db_now), db_now);
    select h.value into current_value from policy_value_history h
    where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id and h.effective_at <= db_now
    order by h.effective_at desc, h.seq desc limit 1;
    if current_value is null then
        select h.value into current_value from policy_value_history h
        where h.key = p_key and h.level = 'global' and h.scope_id = '' and h.effective_at <= db_now
        order by h.effective_at desc, h.seq desc limit 1;
    end if;
    if current_value is null then
        select k.default_value into current_value from policy_keys k where k.key = p_key;
    end if;
    if current_value is distinct from p_old_value then
        outcome := 'stale_old_value';
        return;
    end if;
    if p_value is null then
        select h.value is not null into found_here from policy_value_history h
        where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id and h.effective_at <= effective
        order by h.effective_at desc, h.seq desc limit 1;
        if found_here is not true then
            outcome := 'not_overridden';
            return;
        end if;
    else
        select h.id, h.seq, h.value, h.effective_at
        into here_id, here_seq, here_value, here_effective_at
        from policy_value_history h
        where h.key = p_key and h.level = p_level and h.scope_id = p_scope_id and h.effective_at <= effective
        order by h.effective_at desc, h.seq desc limit 1;
        if here_seq is not null and here_effective_at <= db_now and here_value = p_value then
            outcome := 'unchanged';
            value_id := here_id;
            value_seq := here_seq;
            effective_at := here_effective_at;
            return;
        end if;
    end if;
    outcome := 'ok';
end
$$;

grant execute on function policy_values_check(text, text, text, jsonb, timestamptz, jsonb) to policy_values_app;
