-- The database checks every stored value against its key's type and bounds,
-- as the application does before writing: a writer whose copy of the
-- catalog is a moment old (a server's replica) cannot store a value that a
-- catalog change has just put out of bounds. Writes and catalog syncs hold
-- the same write lock, so this check sees the catalog as committed.
create function policy_values_check_bounds() returns trigger
language plpgsql as $$
declare
    k policy_keys;
    n numeric;
begin
    if new.kind <> 'set' then
        return new;
    end if;
    select * into k from policy_keys where key = new.key;
    if not found then
        return new; -- the foreign key reports it
    end if;
    if jsonb_typeof(new.value) <> (case k.value_type when 'int' then 'number' when 'bool' then 'boolean' else 'string' end) then
        raise exception 'value % does not have the type % of %', new.value, k.value_type, new.key
            using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
    end if;
    if k.value_type = 'int' then
        n := (new.value #>> '{}')::numeric;
        if n <> trunc(n) or n < k.min_value or n > k.max_value then
            raise exception 'value % is outside [%, %] for %', new.value, k.min_value, k.max_value, new.key
                using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
        end if;
    elsif k.value_type = 'string' and not ((new.value #>> '{}') = any (k.enum_values)) then
        raise exception 'value % is not one of % for %', new.value, k.enum_values, new.key
            using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
    end if;
    return new;
end
$$;

create trigger policy_values_within_bounds before insert on policy_values
    for each row execute function policy_values_check_bounds();
