-- List values: a key of type 'list' holds a JSON array of distinct strings,
-- at most max_items of them, each allowed by the key's items rule: an enum of
-- allowed items (enum_values, as for a string key) or a pattern every item
-- must match as a whole (item_pattern). Allowlists (commands, paths, models)
-- are lists: resolution treats a list as one value, so the most specific
-- level's whole list wins.
--
-- Only the catalog's shape checks and the bounds check change here. The new
-- columns travel in policy_key_changes by themselves: policy_key_definition()
-- is the whole row as JSON.

alter table policy_keys
    add column max_items    integer,
    add column item_pattern text;

alter table policy_keys drop constraint policy_keys_value_type_valid;
alter table policy_keys add constraint policy_keys_value_type_valid
    check (value_type in ('int', 'bool', 'string', 'list'));

alter table policy_keys drop constraint policy_keys_bounds_shape;
alter table policy_keys add constraint policy_keys_bounds_shape check (
    (value_type = 'int' and min_value is not null and max_value is not null
        and min_value <= max_value and enum_values is null and max_items is null and item_pattern is null)
    or (value_type = 'string' and enum_values is not null and cardinality(enum_values) > 0
        and min_value is null and max_value is null and max_items is null and item_pattern is null)
    or (value_type = 'bool' and min_value is null and max_value is null and enum_values is null
        and max_items is null and item_pattern is null)
    or (value_type = 'list' and min_value is null and max_value is null
        and max_items between 1 and 1000
        and ((enum_values is not null and cardinality(enum_values) > 0 and item_pattern is null)
             or (enum_values is null and octet_length(item_pattern) between 1 and 256)))
);

alter table policy_keys drop constraint policy_keys_default_type;
alter table policy_keys add constraint policy_keys_default_type check (
    jsonb_typeof(default_value) = case value_type
        when 'int' then 'number' when 'bool' then 'boolean' when 'list' then 'array' else 'string' end
);

-- The bounds check of 20261121000007, now knowing lists. The application
-- checks the same rules first and answers each with its own code; this is
-- the backstop for a writer whose catalog copy is a moment old.
create or replace function policy_values_check_bounds() returns trigger
language plpgsql as $$
declare
    k policy_keys;
    n numeric;
    bad text;
begin
    if new.kind <> 'set' then
        return new;
    end if;
    select * into k from policy_keys where key = new.key;
    if not found then
        return new; -- the foreign key reports it
    end if;
    if jsonb_typeof(new.value) <> (case k.value_type when 'int' then 'number' when 'bool' then 'boolean'
                                   when 'list' then 'array' else 'string' end) then
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
    elsif k.value_type = 'list' then
        if jsonb_array_length(new.value) > k.max_items then
            raise exception 'the list % has more than % items for %', new.value, k.max_items, new.key
                using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
        end if;
        select e::text into bad from jsonb_array_elements(new.value) e where jsonb_typeof(e) <> 'string' limit 1;
        if bad is not null then
            raise exception 'list item % is not a string for %', bad, new.key
                using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
        end if;
        select t into bad from jsonb_array_elements_text(new.value) t group by t having count(*) > 1 limit 1;
        if bad is not null then
            raise exception 'the list holds % more than once for %', bad, new.key
                using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
        end if;
        select t into bad from jsonb_array_elements_text(new.value) t
        where (k.enum_values is not null and not (t = any (k.enum_values)))
           or (k.item_pattern is not null and t !~ ('^(?:' || k.item_pattern || ')$'))
        limit 1;
        if bad is not null then
            raise exception 'list item % is not allowed for %', bad, new.key
                using errcode = 'check_violation', constraint = 'policy_values_within_bounds';
        end if;
    end if;
    return new;
end
$$;
