-- Servers cache authenticated tokens; every change to a token (creation,
-- revocation, expiry edits, deletion) is announced so each server drops its
-- cache at once instead of serving a revoked token until a timeout.
create function api_tokens_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('api_tokens', coalesce(new.id, old.id)::text);
    return null;
end
$$;

create trigger api_tokens_notify after insert or update or delete on api_tokens
    for each row execute function api_tokens_notify();
