-- Change requests (governance, issue 11): a write to a key whose catalog
-- entry has approvals_required > 0 is held here until enough admins other
-- than its author approve it; it is then applied through the ordinary write
-- function, with the request's old_value, in the approval's transaction.
--
-- A request's content never changes after it is made (the trigger below
-- refuses it), so an approval always approves exactly what its approver saw:
-- to change a request, withdraw it and make a new one. Once a request leaves
-- `pending` its row is final. Neither table can be deleted from or
-- truncated; every transition is also an audit record in the hash chain.

create table change_requests (
    id                 uuid primary key default gen_random_uuid(),
    -- Newest-first paging (keyset on this number).
    number             bigint generated always as identity
                       constraint change_requests_number_unique unique,
    key                text not null constraint change_requests_key_fk references policy_keys (key),
    level              text not null
                       constraint change_requests_level_valid
                       check (level in ('global', 'plan', 'org', 'project', 'user')),
    scope_id           text not null,
    -- The proposed value; null removes the override at the scope.
    value              jsonb,
    old_value          jsonb not null,
    effective_at       timestamptz,
    reason             text not null,
    author             text not null,
    approvals_required smallint not null
                       constraint change_requests_approvals_range check (approvals_required between 1 and 10),
    state              text not null default 'pending'
                       constraint change_requests_state_valid check (state in
                           ('pending', 'applied', 'scheduled', 'rejected', 'withdrawn', 'conflicted', 'expired')),
    created_at         timestamptz not null default now(),
    expires_at         timestamptz not null,
    -- Who moved it out of `pending`, when and why (the approver whose
    -- approval applied it, the rejecter, the author withdrawing; null for
    -- an expiry).
    decided_at         timestamptz,
    decided_by         text,
    decision_reason    text,
    -- The value row an applied or scheduled request wrote.
    value_id           uuid,
    -- The value found instead of old_value, for a conflicted request.
    current_value      jsonb,

    constraint change_requests_scope_shape check ((level = 'global') = (scope_id = '')),
    constraint change_requests_decided check ((state = 'pending') = (decided_at is null)),
    constraint change_requests_applied_row check ((state in ('applied', 'scheduled')) = (value_id is not null))
);

create index change_requests_state_number on change_requests (state, number desc);
create index change_requests_key_number on change_requests (key, number desc);
create index change_requests_author_number on change_requests (author, number desc);
-- Expiry looks for pending requests past their time.
create index change_requests_pending_expiry on change_requests (expires_at) where state = 'pending';

-- One approval per approver per request: a second approval by the same
-- person is refused, not counted.
create table change_request_approvals (
    request_id  uuid not null constraint change_request_approvals_request_fk references change_requests (id),
    approver    text not null,
    reason      text not null,
    created_at  timestamptz not null default now(),
    constraint change_request_approvals_pkey primary key (request_id, approver)
);

create function change_requests_guard() returns trigger
language plpgsql as $$
begin
    if tg_op <> 'UPDATE' then
        raise exception 'change requests are never deleted' using errcode = 'insufficient_privilege';
    end if;
    if old.state <> 'pending' then
        raise exception 'change request % is % and final', old.id, old.state
            using errcode = 'check_violation', constraint = 'change_requests_final';
    end if;
    if (new.id, new.number, new.key, new.level, new.scope_id, new.value, new.old_value, new.effective_at,
        new.reason, new.author, new.approvals_required, new.created_at)
       is distinct from
       (old.id, old.number, old.key, old.level, old.scope_id, old.value, old.old_value, old.effective_at,
        old.reason, old.author, old.approvals_required, old.created_at) then
        raise exception 'a change request''s content cannot be edited; withdraw it and make a new one'
            using errcode = 'check_violation', constraint = 'change_requests_immutable';
    end if;
    return new;
end
$$;

create trigger change_requests_guard before update or delete on change_requests
    for each row execute function change_requests_guard();
create trigger change_requests_no_truncate before truncate on change_requests
    for each statement execute function policy_values_refuse_change();
create trigger change_request_approvals_immutable before update or delete on change_request_approvals
    for each row execute function policy_values_refuse_change();
create trigger change_request_approvals_no_truncate before truncate on change_request_approvals
    for each statement execute function policy_values_refuse_change();

-- Every check policy_values_write makes, without writing or locking: for a
-- change request when it is made, and for a preview. Same rule for what a
-- write replaces (migration 0008).
create function policy_values_check(
    p_key text, p_level text, p_scope_id text, p_value jsonb, p_effective_at timestamptz, p_old_value jsonb,
    out outcome text, out current_value jsonb, out db_now timestamptz)
language plpgsql stable as $$
declare
    effective timestamptz;
    found_here boolean;
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
    end if;
    outcome := 'ok';
end
$$;

grant select, insert, update on change_requests to policy_values_app;
grant select, insert on change_request_approvals to policy_values_app;
grant execute on function policy_values_check(text, text, text, jsonb, timestamptz, jsonb) to policy_values_app;
