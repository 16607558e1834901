-- The back office (issue 8): suspensions, complimentary plans, and credit adjustments
-- that wait for a second staff member (four-eyes).

-- A suspended workspace keeps its data; its API keys answer 403 `workspace_suspended`.
alter table workspaces
    add column suspended_at     timestamptz,
    add column suspended_reason text check (length(suspended_reason) <= 1000),
    -- a plan set by staff without Stripe (complimentary); subscriptions never clear it
    add column plan_override    boolean not null default false;

-- A suspended user cannot sign in and every session of theirs ends (the session
-- loader finds no active user).
alter table users
    add column suspended_at timestamptz;

-- A credit adjustment above the configured amount waits here until another staff
-- member approves it; the approval writes the ledger entry and links it.
create type adjustment_request_status as enum ('pending', 'approved', 'rejected');

create table credit_adjustment_requests (
    adjustment_request_id bigint generated always as identity primary key,
    workspace_id          uuid not null references workspaces (workspace_id) on delete cascade,
    bucket                text not null check (bucket in ('plan', 'purchased')),
    credits               bigint not null check (credits <> 0),
    reason                text not null check (length(reason) between 3 and 1000),
    requested_by          uuid not null references users (user_id),
    requested_at          timestamptz not null default now(),
    status                adjustment_request_status not null default 'pending',
    decided_by            uuid references users (user_id),
    decided_at            timestamptz,
    ledger_entry_id       bigint references ledger_entries (ledger_entry_id),
    -- the asking form's one-time token: a resubmitted form queues one request
    nonce                 text not null check (length(nonce) between 1 and 100),
    unique (workspace_id, nonce),
    -- four eyes: whoever asked cannot decide
    check (decided_by is null or decided_by <> requested_by),
    check ((status = 'pending') = (decided_at is null))
);
create index credit_adjustment_requests_pending on credit_adjustment_requests (requested_at)
    where status = 'pending';

-- Admin lists sort and page on these.
create index workspaces_created_at on workspaces (created_at, workspace_id);
create index users_created_at on users (created_at, user_id);
create index audit_events_occurred_at on audit_events (occurred_at);
create index credit_adjustment_requests_workspace on credit_adjustment_requests (workspace_id);

-- The overview (`/admin`): new subscriptions per month, credits consumed per day,
-- the unapplied webhook inbox. Subscriptions stored before this migration count from
-- the start of their current period (the earliest date billfold kept).
alter table subscriptions add column created_at timestamptz;
update subscriptions set created_at = current_period_start;
alter table subscriptions alter column created_at set default now(),
                          alter column created_at set not null;
create index usage_events_time_idx on usage_events (created_at) include (credits_charged);
create index stripe_events_unapplied_idx on stripe_events (received_at)
    where processed_at is null and skipped_at is null;

-- Metering refuses a suspended workspace before anything else happens: the checked
-- entry point wraps the existing function (same signature, one round trip).
alter type consume_outcome add value if not exists 'workspace_suspended';
alter function consume_credits(bytea, text, bigint, text, bytea) rename to consume_credits_unchecked;

create function consume_credits(
    p_key_hash bytea, p_feature text, p_quantity bigint, p_idempotency_key text, p_request_hash bytea
) returns table (
    outcome consume_outcome, workspace_id uuid, charged bigint, plan_credits bigint,
    purchased_credits bigint, debt bigint, required bigint, available bigint,
    rate_limit integer, rate_remaining integer, rate_reset_ms bigint, retry_after_ms bigint
) language plpgsql as $$
#variable_conflict use_column
declare
    v_workspace uuid;
begin
    select w.workspace_id into v_workspace
      from api_keys k join workspaces w on w.workspace_id = k.workspace_id
     where k.key_hash = p_key_hash and k.revoked_at is null and w.suspended_at is not null;
    if found then
        return query select 'workspace_suspended'::consume_outcome, v_workspace, 0::bigint,
            0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, null::integer,
            null::integer, null::bigint, null::bigint;
        return;
    end if;
    return query select * from consume_credits_unchecked(p_key_hash, p_feature, p_quantity,
                                                        p_idempotency_key, p_request_hash);
end;
$$;

-- Money as admin lists and their CSV show it: `12.34 EUR`, `1200 JPY` (Stripe's
-- zero-decimal currencies have no minor unit).
create function format_money(p_minor bigint, p_currency text) returns text
language sql immutable parallel safe as $$
    select case
        when lower(p_currency) in ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg',
                                   'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf')
            then p_minor::text
        else case when p_minor < 0 then '-' else '' end
             || (abs(p_minor) / 100)::text || '.' || lpad((abs(p_minor) % 100)::text, 2, '0')
    end || ' ' || upper(p_currency)
$$;
