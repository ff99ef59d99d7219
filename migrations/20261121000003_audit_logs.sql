-- The audit log: one row per change (and per refused attempt), append-only,
-- hash-chained. The insert trigger takes the write lock, assigns seq and the
-- database time, and computes hash = sha256(prev_hash || canonical row), so
-- the chain is built by the database whoever inserts. A verifier recomputes
-- audit_canonical() outside the database (see src/store/audit.rs) and
-- compares.

create sequence audit_logs_seq as bigint;

create table audit_logs (
    seq          bigint primary key,
    id           uuid not null default gen_random_uuid()
                 constraint audit_logs_id_unique unique,
    occurred_at  timestamptz not null default clock_timestamp(),
    actor        text not null,
    action       text not null,
    outcome      text not null default 'success'
                 constraint audit_logs_outcome_valid check (outcome in ('success', 'refused')),
    code         text,
    -- No foreign key: a refused attempt may name a key that does not exist.
    policy_key   text,
    scope_level  text,
    scope_id     text,
    effective_at timestamptz,
    request_id   text,
    value_seq    bigint constraint audit_logs_value_fk references policy_values (seq),
    metadata     jsonb not null default '{}'::jsonb,
    prev_hash    bytea not null,
    hash         bytea not null constraint audit_logs_hash_unique unique
);

create index audit_logs_policy_key on audit_logs (policy_key, seq desc);
create index audit_logs_value_seq on audit_logs (value_seq);

-- A field of the canonical row: '<byte length>:<text>;' or '-;' for null.
-- Length-prefixing makes the encoding unambiguous whatever the text holds.
create function audit_field(t text) returns text
language sql immutable as $$
    select case when t is null then '-;' else octet_length(t)::text || ':' || t || ';' end
$$;

create function audit_micros(t timestamptz) returns text
language sql immutable as $$
    select (extract(epoch from t) * 1000000)::bigint::text
$$;

create function audit_canonical(r audit_logs) returns bytea
language sql stable as $$
    select convert_to(
        audit_field(r.seq::text)
        || audit_field(r.id::text)
        || audit_field(audit_micros(r.occurred_at))
        || audit_field(r.actor)
        || audit_field(r.action)
        || audit_field(r.outcome)
        || audit_field(r.code)
        || audit_field(r.policy_key)
        || audit_field(r.scope_level)
        || audit_field(r.scope_id)
        || audit_field(audit_micros(r.effective_at))
        || audit_field(r.request_id)
        || audit_field(r.value_seq::text)
        || audit_field(r.metadata::text),
        'UTF8')
$$;

create function audit_logs_chain() returns trigger
language plpgsql as $$
declare
    prev bytea;
begin
    perform policy_values_write_lock();
    new.seq := nextval('audit_logs_seq');
    new.occurred_at := clock_timestamp();
    select hash into prev from audit_logs order by seq desc limit 1;
    new.prev_hash := coalesce(prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    new.hash := sha256(new.prev_hash || audit_canonical(new));
    return new;
end
$$;

create trigger audit_logs_chain before insert on audit_logs
    for each row execute function audit_logs_chain();

-- Append-only, enforced by the database for every role, owner included.
create trigger audit_logs_immutable before update or delete on audit_logs
    for each row execute function policy_values_refuse_change();

create trigger audit_logs_no_truncate before truncate on audit_logs
    for each statement execute function policy_values_refuse_change();

revoke update, delete, truncate on audit_logs from public;
