-- billfold's first schema: accounts, catalog, credits ledger, metering, top-ups and
-- Stripe events. Conventions: plural table names, `<entity>_id` primary keys, money in
-- bigint minor units next to an ISO 4217 currency, credits in bigint.

-- Accounts ------------------------------------------------------------------------

create table users (
    user_id       uuid primary key default gen_random_uuid(),
    email         text not null check (email = lower(email) and length(email) between 3 and 254),
    -- argon2id PHC string
    password_hash text not null,
    is_staff      boolean not null default false,
    created_at    timestamptz not null default now()
);
create unique index users_email_key on users (email);

-- Catalog (DESIGN.md "Default catalog"; admins edit it) ---------------------------

create table plans (
    plan_code           text primary key,
    name                text not null,
    monthly_price_minor bigint not null check (monthly_price_minor >= 0),
    currency            text not null check (currency ~ '^[a-z]{3}$'),
    -- null = unlimited allowance (enterprise): usage is still recorded in the ledger
    monthly_credits     bigint check (monthly_credits >= 0),
    -- null = no rate limit
    rate_limit_per_min  integer check (rate_limit_per_min > 0),
    max_members         integer check (max_members > 0),
    max_api_keys        integer check (max_api_keys > 0),
    sort_order          integer not null default 0
);

create table features (
    feature_code  text primary key check (feature_code ~ '^[a-z_]+\.[a-z_]+$'),
    -- the part before the dot: what plans are entitled to
    feature_group text not null generated always as (split_part(feature_code, '.', 1)) stored,
    description   text not null,
    credit_cost   bigint not null check (credit_cost > 0)
);

create table plan_entitlements (
    plan_code     text not null references plans (plan_code) on delete cascade,
    feature_group text not null,
    primary key (plan_code, feature_group)
);

create table credit_packs (
    credit_pack_code text primary key,
    name             text not null,
    credits          bigint not null check (credits > 0),
    price_minor      bigint not null check (price_minor > 0),
    currency         text not null check (currency ~ '^[a-z]{3}$'),
    active           boolean not null default true,
    sort_order       integer not null default 0
);

-- Workspaces ----------------------------------------------------------------------

create table workspaces (
    workspace_id       uuid primary key default gen_random_uuid(),
    name               text not null,
    plan_code          text not null references plans (plan_code),
    stripe_customer_id text unique,
    created_at         timestamptz not null default now()
);

create type membership_role as enum ('owner', 'admin', 'member');

create table memberships (
    workspace_id uuid not null references workspaces (workspace_id) on delete cascade,
    user_id      uuid not null references users (user_id) on delete cascade,
    role         membership_role not null,
    created_at   timestamptz not null default now(),
    primary key (workspace_id, user_id)
);
create index memberships_user_id_idx on memberships (user_id);

-- Credits -------------------------------------------------------------------------

-- Two buckets: plan credits (monthly allowance, reset each period) and purchased
-- credits (top-ups and grants, never expire). Neither may go negative.
create table balances (
    workspace_id      uuid primary key references workspaces (workspace_id) on delete cascade,
    plan_credits      bigint not null default 0 check (plan_credits >= 0),
    purchased_credits bigint not null default 0 check (purchased_credits >= 0),
    updated_at        timestamptz not null default now()
);

create type ledger_entry_kind as enum ('plan_allowance', 'top_up', 'usage', 'adjustment', 'refund');

-- Append-only: corrections are compensating entries. For every workspace
-- balance.plan_credits = Σ plan_delta and balance.purchased_credits = Σ purchased_delta.
create table ledger_entries (
    ledger_entry_id          bigint generated always as identity primary key,
    workspace_id             uuid not null references workspaces (workspace_id),
    kind                     ledger_entry_kind not null,
    plan_delta               bigint not null,
    purchased_delta          bigint not null,
    -- balances right after this entry, so a statement needs no window function
    plan_balance_after       bigint not null,
    purchased_balance_after  bigint not null,
    description              text not null,
    -- what caused the entry: a checkout session id, a usage event id, "signup", ...;
    -- a grant with a reference happens at most once per workspace and kind
    reference                text,
    created_at               timestamptz not null default now()
);
create index ledger_entries_workspace_idx on ledger_entries (workspace_id, ledger_entry_id desc);
create unique index ledger_entries_grant_once_key on ledger_entries (workspace_id, kind, reference)
    where reference is not null and kind <> 'usage';

create function ledger_entries_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'ledger_entries is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
end $$;
create trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function ledger_entries_refuse_change();
create trigger ledger_entries_no_truncate before truncate on ledger_entries
    for each statement execute function ledger_entries_refuse_change();

-- API keys: only a SHA-256 of the key is stored; the key is shown once.
create table api_keys (
    api_key_id   uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (workspace_id) on delete cascade,
    name         text not null check (length(name) between 1 and 100),
    -- first characters of the key, to recognise it in lists ("bf_4f3a9c…")
    key_prefix   text not null,
    key_hash     bytea not null unique,
    created_by   uuid references users (user_id) on delete set null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
create index api_keys_workspace_idx on api_keys (workspace_id);

-- One row per accepted metering call; its idempotency key makes retries no-ops.
create table usage_events (
    usage_event_id          uuid primary key default gen_random_uuid(),
    workspace_id            uuid not null references workspaces (workspace_id),
    api_key_id              uuid references api_keys (api_key_id) on delete set null,
    feature_code            text not null references features (feature_code),
    quantity                bigint not null check (quantity > 0),
    credits_charged         bigint not null check (credits_charged >= 0),
    idempotency_key         text not null,
    -- sha256 of (feature, quantity): the same key with another body is a conflict
    request_hash            bytea not null,
    plan_balance_after      bigint not null,
    purchased_balance_after bigint not null,
    created_at              timestamptz not null default now(),
    unique (workspace_id, idempotency_key)
);
create index usage_events_workspace_time_idx on usage_events (workspace_id, created_at);

-- Consume credits in one round trip (DESIGN.md "Credits"): authenticate the API key,
-- replay an idempotent retry, check entitlement, take plan credits first and then
-- purchased credits, write the ledger entry and the usage event. The balance row lock
-- serialises every change of one workspace, so the idempotency lookup after it is exact.
-- Outcomes: ok | replay | insufficient_credits | unknown_key | unknown_feature |
-- feature_not_in_plan | idempotency_conflict. Nothing is written unless ok.
create function consume_credits(
    p_key_hash bytea, p_feature text, p_quantity bigint, p_idempotency_key text, p_request_hash bytea
) returns table (
    outcome text, workspace_id uuid, charged bigint, plan_credits bigint,
    purchased_credits bigint, required bigint, available bigint
) language plpgsql as $$
#variable_conflict use_column
declare
    v_key      api_keys%rowtype;
    v_plan     plans%rowtype;
    v_cost     bigint;
    v_group    text;
    v_bal      balances%rowtype;
    v_prev     usage_events%rowtype;
    v_take     bigint;
    v_unlim    boolean;
    v_event_id uuid := gen_random_uuid();
begin
    select * into v_key from api_keys k where k.key_hash = p_key_hash and k.revoked_at is null;
    if not found then
        return query select 'unknown_key', null::uuid, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        return;
    end if;

    select * into v_bal from balances b where b.workspace_id = v_key.workspace_id for update;

    select * into v_prev from usage_events u
     where u.workspace_id = v_key.workspace_id and u.idempotency_key = p_idempotency_key;
    if found then
        if v_prev.request_hash <> p_request_hash then
            return query select 'idempotency_conflict', v_key.workspace_id, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        else
            return query select 'replay', v_key.workspace_id, v_prev.credits_charged,
                v_prev.plan_balance_after, v_prev.purchased_balance_after, 0::bigint, 0::bigint;
        end if;
        return;
    end if;

    select f.credit_cost, f.feature_group into v_cost, v_group from features f where f.feature_code = p_feature;
    if not found then
        return query select 'unknown_feature', v_key.workspace_id, 0::bigint, v_bal.plan_credits, v_bal.purchased_credits, 0::bigint, 0::bigint;
        return;
    end if;

    select p.* into v_plan from workspaces w join plans p using (plan_code) where w.workspace_id = v_key.workspace_id;
    if not exists (select 1 from plan_entitlements e where e.plan_code = v_plan.plan_code and e.feature_group = v_group) then
        return query select 'feature_not_in_plan', v_key.workspace_id, 0::bigint, v_bal.plan_credits, v_bal.purchased_credits, 0::bigint, 0::bigint;
        return;
    end if;

    v_cost := v_cost * p_quantity;
    v_unlim := v_plan.monthly_credits is null;
    if not v_unlim and v_bal.plan_credits + v_bal.purchased_credits < v_cost then
        return query select 'insufficient_credits', v_key.workspace_id, 0::bigint, v_bal.plan_credits,
            v_bal.purchased_credits, v_cost, v_bal.plan_credits + v_bal.purchased_credits;
        return;
    end if;

    if v_unlim then
        v_take := 0;  -- unlimited plans record usage with zero balance impact
    else
        v_take := least(v_bal.plan_credits, v_cost);
        update balances b
           set plan_credits = b.plan_credits - v_take,
               purchased_credits = b.purchased_credits - (v_cost - v_take),
               updated_at = now()
         where b.workspace_id = v_key.workspace_id
        returning * into v_bal;
    end if;

    insert into usage_events (usage_event_id, workspace_id, api_key_id, feature_code, quantity,
        credits_charged, idempotency_key, request_hash, plan_balance_after, purchased_balance_after)
    values (v_event_id, v_key.workspace_id, v_key.api_key_id, p_feature, p_quantity, v_cost,
        p_idempotency_key, p_request_hash, v_bal.plan_credits, v_bal.purchased_credits);

    insert into ledger_entries (workspace_id, kind, plan_delta, purchased_delta, plan_balance_after,
        purchased_balance_after, description, reference)
    values (v_key.workspace_id, 'usage',
        case when v_unlim then 0 else -v_take end,
        case when v_unlim then 0 else -(v_cost - v_take) end,
        v_bal.plan_credits, v_bal.purchased_credits,
        p_feature || ' × ' || p_quantity || case when v_unlim then ' (' || v_cost || ' credits, unlimited plan)' else '' end,
        v_event_id::text);

    -- last_used_at is advisory: write it at most once a minute to keep hot keys cheap
    update api_keys k set last_used_at = now()
     where k.api_key_id = v_key.api_key_id
       and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute');

    return query select 'ok', v_key.workspace_id, v_cost, v_bal.plan_credits, v_bal.purchased_credits, 0::bigint, 0::bigint;
end $$;

-- Top-ups: one row per checkout session in payment mode, created before redirecting to
-- Stripe so the webhook knows what was bought.
create type top_up_status as enum ('open', 'paid', 'expired');

create table top_ups (
    top_up_id                  uuid primary key default gen_random_uuid(),
    workspace_id               uuid not null references workspaces (workspace_id),
    stripe_checkout_session_id text not null unique,
    credit_pack_code           text references credit_packs (credit_pack_code),
    credits                    bigint not null check (credits > 0),
    amount_minor               bigint not null check (amount_minor > 0),
    currency                   text not null check (currency ~ '^[a-z]{3}$'),
    status                     top_up_status not null default 'open',
    created_by                 uuid references users (user_id) on delete set null,
    created_at                 timestamptz not null default now(),
    paid_at                    timestamptz
);
create index top_ups_workspace_idx on top_ups (workspace_id, created_at desc);

-- Stripe events, stored by id: a duplicate delivery is acknowledged and not re-applied.
create table stripe_events (
    stripe_event_id text primary key,
    event_type      text not null,
    livemode        boolean not null,
    payload         jsonb not null,
    received_at     timestamptz not null default now(),
    processed_at    timestamptz
);
