-- Catalog changes take positions in the same sequence as value rows, under
-- the same write lock, so the store's changes form one ordered stream: the
-- change feed (GET /api/v1/changes) and the clients' tail read "everything
-- after position N", value rows and catalog definitions alike, in the order
-- they committed. A value row of a key created by a catalog sync therefore
-- always comes after that key's definition.
--
-- Each row holds a key's whole definition after the change: the policy_keys
-- row as JSON, so a column added to policy_keys later travels with it.

create table policy_key_changes (
    -- Assigned by the insert trigger under the write lock (see 0001).
    seq        bigint primary key,
    key        text not null constraint policy_key_changes_key_fk references policy_keys (key),
    definition jsonb not null
               constraint policy_key_changes_definition_object check (jsonb_typeof(definition) = 'object'),
    created_at timestamptz not null default clock_timestamp()
);

-- The value rows' own trigger function: the lock, the next position, the time.
create trigger policy_key_changes_before_insert before insert on policy_key_changes
    for each row execute function policy_values_before_insert();

-- Announced on the value rows' channel: a listener reads seq > last from both.
create trigger policy_key_changes_notify after insert on policy_key_changes
    for each row execute function policy_values_notify();

create trigger policy_key_changes_immutable before update or delete on policy_key_changes
    for each row execute function policy_values_refuse_change();

create trigger policy_key_changes_no_truncate before truncate on policy_key_changes
    for each statement execute function policy_values_refuse_change();

-- The definition as it travels: every column but the bookkeeping times.
create function policy_key_definition(k policy_keys) returns jsonb
language sql stable as $$
    select to_jsonb(k) - 'created_at' - 'updated_at'
$$;

-- Every insert, and every update that changes the definition, is recorded.
create function policy_keys_record_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' or policy_key_definition(new) is distinct from policy_key_definition(old) then
        insert into policy_key_changes (key, definition) values (new.key, policy_key_definition(new));
    end if;
    return new;
end
$$;

create trigger policy_keys_record_change after insert or update on policy_keys
    for each row execute function policy_keys_record_change();

-- The catalog as it stands, so a new subscriber's history is complete.
insert into policy_key_changes (key, definition)
select k.key, policy_key_definition(k) from policy_keys k order by k.key;

grant select, insert on policy_key_changes to policy_values_app;
