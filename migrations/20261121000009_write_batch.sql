-- Group commit: several admin writes in one statement, hence one
-- transaction and one WAL flush. The write lock is held from the first
-- write until the commit, so a lone write paid its own flush (about a third
-- of its time on the benchmark machine) with every other writer queued
-- behind it. Here the writes queued during one commit share the next.
--
-- Each element is exactly one call of policy_values_write, in array order,
-- and each call sees the rows the earlier ones inserted: a batch answers
-- what the same writes made one after another would. The arrays are
-- parallel (element i of each is write i). A write that raises (a bound a
-- catalog change has just tightened, say) aborts the whole statement; the
-- caller then makes the writes one at a time to give each its own answer
-- (src/store/values.rs).
create function policy_values_write_batch(
    p_key text[], p_level text[], p_scope_id text[], p_value jsonb[], p_effective_at timestamptz[],
    p_reason text[], p_old_value jsonb[], p_actor text[], p_request_id text[], p_metadata jsonb[])
returns table (
    ord integer, outcome text, current_value jsonb, db_now timestamptz,
    value_id uuid, value_seq bigint, effective_at timestamptz, created_at timestamptz,
    audit_id uuid, audit_seq bigint)
language plpgsql as $$
declare
    n integer := coalesce(array_length(p_key, 1), 0);
begin
    if n <> coalesce(array_length(p_level, 1), 0) or n <> coalesce(array_length(p_scope_id, 1), 0)
       or n <> coalesce(array_length(p_value, 1), 0) or n <> coalesce(array_length(p_effective_at, 1), 0)
       or n <> coalesce(array_length(p_reason, 1), 0) or n <> coalesce(array_length(p_old_value, 1), 0)
       or n <> coalesce(array_length(p_actor, 1), 0) or n <> coalesce(array_length(p_request_id, 1), 0)
       or n <> coalesce(array_length(p_metadata, 1), 0) then
        raise exception 'policy_values_write_batch: the arrays differ in length'
            using errcode = 'invalid_parameter_value';
    end if;
    for i in 1 .. n loop
        return query
            select i, w.*
            from policy_values_write(p_key[i], p_level[i], p_scope_id[i], p_value[i], p_effective_at[i],
                                     p_reason[i], p_old_value[i], p_actor[i], p_request_id[i], p_metadata[i]) w;
    end loop;
end
$$;

grant execute on function policy_values_write_batch(text[], text[], text[], jsonb[], timestamptz[], text[], jsonb[],
                                                    text[], text[], jsonb[])
    to policy_values_app;
