-- Value rows are immutable. A change inserts a row; removing an override
-- inserts an 'unset' tombstone; cancelling a scheduled change inserts a
-- 'cancel' row naming it. The value of (key, level, scope_id) at time T is the
-- non-cancelled set/unset row with the latest effective_at <= T (ties: the
-- latest seq). That one rule gives scheduled changes, history and
-- point-in-time answers without ever rewriting a row.

create sequence policy_values_seq as bigint;

create table policy_values (
    -- Assigned by the insert trigger under the write lock (see 0001), never by
    -- the caller, so seq order is commit order.
    seq          bigint primary key,
    id           uuid not null default gen_random_uuid()
                 constraint policy_values_id_unique unique,
    kind         text not null
                 constraint policy_values_kind_valid check (kind in ('set', 'unset', 'cancel')),
    key          text not null
                 constraint policy_values_key_fk references policy_keys (key),
    level        text not null
                 constraint policy_values_level_valid
                 check (level in ('user', 'project', 'org', 'plan', 'global')),
    scope_id     text not null,
    value        jsonb,
    effective_at timestamptz not null,
    actor        text not null,
    reason       text not null,
    cancels_seq  bigint
                 constraint policy_values_cancels_fk references policy_values (seq),
    created_at   timestamptz not null default clock_timestamp(),

    constraint policy_values_scope_shape check ((level = 'global') = (scope_id = '')),
    constraint policy_values_scope_id_length check (char_length(scope_id) <= 256),
    constraint policy_values_value_shape check ((kind = 'set') = (value is not null)),
    constraint policy_values_cancel_shape check ((kind = 'cancel') = (cancels_seq is not null)),
    constraint policy_values_reason_length check (char_length(btrim(reason)) between 1 and 1000)
);

-- A scheduled change is cancelled at most once.
create unique index policy_values_cancel_once on policy_values (cancels_seq)
    where cancels_seq is not null;

-- Resolution: the latest row per (key, level, scope) at a time.
create index policy_values_resolution on policy_values (key, level, scope_id, effective_at desc, seq desc);

create function policy_values_before_insert() returns trigger
language plpgsql as $$
begin
    perform policy_values_write_lock();
    new.seq := nextval('policy_values_seq');
    new.created_at := clock_timestamp();
    return new;
end
$$;

create trigger policy_values_before_insert before insert on policy_values
    for each row execute function policy_values_before_insert();

-- Every committed row is announced with its seq; listeners fetch seq > last.
-- NOTIFY is transactional: it is delivered at commit, never for a rollback.
create function policy_values_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('policy_values', new.seq::text);
    return new;
end
$$;

create trigger policy_values_notify after insert on policy_values
    for each row execute function policy_values_notify();

create function policy_values_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception '% is append-only: % refused', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger policy_values_immutable before update or delete on policy_values
    for each row execute function policy_values_refuse_change();

create trigger policy_values_no_truncate before truncate on policy_values
    for each statement execute function policy_values_refuse_change();

-- The rows resolution reads: set and unset rows that were not cancelled.
create view policy_value_history as
select v.seq, v.id, v.key, v.level, v.scope_id, v.value, v.effective_at, v.actor, v.reason, v.created_at
from policy_values v
where v.kind in ('set', 'unset')
  and not exists (select 1 from policy_values c where c.cancels_seq = v.seq);

-- What is in force or scheduled now: per (key, level, scope) the row in
-- effect now, plus every row still to take effect. Tombstones included, so a
-- reader can tell "removed" from "never set".
create view policy_values_live as
select h.*
from policy_value_history h
where h.effective_at > now()
   or h.seq = (
        select h2.seq from policy_value_history h2
        where h2.key = h.key and h2.level = h.level and h2.scope_id = h.scope_id
          and h2.effective_at <= now()
        order by h2.effective_at desc, h2.seq desc
        limit 1);
