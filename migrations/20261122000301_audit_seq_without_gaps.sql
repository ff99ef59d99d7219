-- Audit seqs without gaps. They were drawn from a sequence, which a
-- transaction that rolls back (a batch the database refuses, a session
-- terminated mid-write) consumes anyway, and the verifier rightly treats a
-- missing seq as a missing row. The chain trigger already reads the last
-- row under the write lock to chain to its hash; it now takes the next seq
-- from it too, so a rolled-back insert leaves nothing behind.
create or replace function audit_logs_chain() returns trigger
language plpgsql as $$
declare
    prev_seq bigint;
    prev_hash bytea;
begin
    perform policy_values_write_lock();
    select seq, hash into prev_seq, prev_hash from audit_logs order by seq desc limit 1;
    new.seq := coalesce(prev_seq, 0) + 1;
    new.occurred_at := clock_timestamp();
    new.prev_hash := coalesce(prev_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    new.hash := sha256(new.prev_hash || audit_canonical(new));
    return new;
end
$$;
