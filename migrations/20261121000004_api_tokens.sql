-- Bearer tokens. Only the SHA-256 of a token is stored; the token itself is
-- shown once by `policy-values token create`. `prefix` is the token's first
-- characters, enough to recognise it in a listing, never enough to use it.

create table api_tokens (
    id          uuid primary key default gen_random_uuid(),
    name        text not null
                constraint api_tokens_name_length check (char_length(name) between 1 and 200),
    role        text not null
                constraint api_tokens_role_valid check (role in ('admin', 'auditor', 'reader')),
    token_hash  bytea not null
                constraint api_tokens_hash_unique unique
                constraint api_tokens_hash_length check (octet_length(token_hash) = 32),
    prefix      text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
