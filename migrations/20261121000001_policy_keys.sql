-- The key catalog. Every key is typed and bounded: ints carry min/max, strings
-- an enum, bools are bounded by their type. The catalog is data synced from
-- seed/catalog.toml by `policy-values seed`; this table is the database's copy
-- so value rows can reference it and the bounds can be checked in one place.

-- One advisory lock serialises every write to policy_values and audit_logs.
-- Holding it from sequence allocation to commit makes commit order equal seq
-- order, so a reader tailing by `seq > last_seq` can never skip a row that
-- commits late, and the audit hash chain has a single well-defined tail.
-- The lock is transaction-scoped and re-entrant within one transaction.
create function policy_values_write_lock() returns void
language sql volatile as $$
    select pg_advisory_xact_lock(7061736172650001)
$$;

create table policy_keys (
    key           text primary key
                  constraint policy_keys_key_format
                  check (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' and char_length(key) <= 128),
    value_type    text not null
                  constraint policy_keys_value_type_valid check (value_type in ('int', 'bool', 'string')),
    default_value jsonb not null,
    min_value     bigint,
    max_value     bigint,
    enum_values   text[],
    description   text not null,
    unit          text not null default '',
    -- Deny-on-miss: a client with neither database nor snapshot refuses to
    -- answer these keys instead of serving the catalog default.
    fail_closed   boolean not null default false,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),

    constraint policy_keys_bounds_shape check (
        (value_type = 'int' and min_value is not null and max_value is not null
            and min_value <= max_value and enum_values is null)
        or (value_type = 'string' and enum_values is not null and cardinality(enum_values) > 0
            and min_value is null and max_value is null)
        or (value_type = 'bool' and min_value is null and max_value is null and enum_values is null)
    ),
    constraint policy_keys_default_type check (
        jsonb_typeof(default_value) = case value_type
            when 'int' then 'number' when 'bool' then 'boolean' else 'string' end
    )
);

-- Services learn about catalog changes the same way they learn about values.
create function policy_keys_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('policy_keys', new.key);
    return new;
end
$$;

create trigger policy_keys_notify after insert or update on policy_keys
    for each row execute function policy_keys_notify();
