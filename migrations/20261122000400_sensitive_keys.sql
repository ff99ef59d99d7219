-- Sensitive keys (governance, issue 11): the catalog may say that a key
-- changes only through a change request that other admins approve, and how
-- many distinct approvals that takes. 0 means an admin's write applies at
-- once, as before; the seed marks money, security and infrastructure keys.
--
-- The column travels with every definition: policy_key_definition() is
-- to_jsonb of the row, so the change feed and the bootstrap carry it, and a
-- client reading an older definition (without it) takes 0.
alter table policy_keys
    add column approvals_required smallint not null default 0
        constraint policy_keys_approvals_required_range check (approvals_required between 0 and 10);
