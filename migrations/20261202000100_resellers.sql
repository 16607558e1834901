-- Resellers (DESIGN.md "Resellers", issue 7): referral links, attribution, commissions
-- that follow every payment and refund, payouts, reseller API keys and branding.
-- Money in bigint minor units next to an ISO 4217 currency; rates in basis points.

create type reseller_status as enum ('active', 'paused', 'closed');

create table resellers (
    reseller_id          uuid primary key default gen_random_uuid(),
    name                 text not null check (length(name) between 1 and 100),
    -- the `/r/{code}` part of the referral link
    referral_code        text not null unique check (referral_code ~ '^[a-z0-9][a-z0-9-]{2,31}$'),
    -- the rate in force now; `reseller_rates` keeps when each rate started
    commission_rate_bps  integer not null check (commission_rate_bps between 0 and 10000),
    -- a commission is approved this many days after its payment (the refund window)
    hold_days            integer not null default 30 check (hold_days between 0 and 365),
    -- a payout is drafted once approved commissions of one currency reach this
    -- (per currency: `reseller_payout_minimums` overrides it)
    minimum_payout_minor bigint not null default 5000 check (minimum_payout_minor >= 0),
    status               reseller_status not null default 'active',
    -- branding shown to the customers it brought
    display_name         text check (length(display_name) between 1 and 60),
    accent_color         text check (accent_color ~ '^#[0-9a-f]{6}$'),
    -- requests for this host show the branding and attribute sign-ups
    host_name            text unique check (host_name ~ '^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$'),
    created_at           timestamptz not null default now()
);

create table reseller_payout_minimums (
    reseller_id   uuid not null references resellers (reseller_id) on delete cascade,
    currency      text not null check (currency ~ '^[a-z]{3}$'),
    minimum_minor bigint not null check (minimum_minor >= 0),
    primary key (reseller_id, currency)
);

-- Every rate a reseller had and since when: a commission uses the rate in force when
-- its payment was made, whenever the payment is applied.
create table reseller_rates (
    reseller_id    uuid not null references resellers (reseller_id) on delete cascade,
    effective_from timestamptz not null,
    rate_bps       integer not null check (rate_bps between 0 and 10000),
    primary key (reseller_id, effective_from)
);

create function resellers_record_rate() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' or new.commission_rate_bps <> old.commission_rate_bps then
        insert into reseller_rates (reseller_id, effective_from, rate_bps)
        values (new.reseller_id,
                case when tg_op = 'INSERT' then '-infinity'::timestamptz
                     -- whole seconds, as Stripe dates payments
                     else date_trunc('second', clock_timestamp()) end,
                new.commission_rate_bps)
        on conflict (reseller_id, effective_from) do update set rate_bps = excluded.rate_bps;
    end if;
    return new;
end $$;
create trigger resellers_record_rate after insert or update on resellers
    for each row execute function resellers_record_rate();

create type reseller_role as enum ('owner', 'member');

-- A user belongs to at most one reseller.
create table reseller_members (
    user_id     uuid primary key references users (user_id) on delete cascade,
    reseller_id uuid not null references resellers (reseller_id) on delete cascade,
    role        reseller_role not null,
    created_at  timestamptz not null default now()
);
create index reseller_members_reseller_idx on reseller_members (reseller_id);

-- The logo shown with the branding: a validated PNG or SVG, served from Postgres.
create table reseller_logos (
    reseller_id  uuid primary key references resellers (reseller_id) on delete cascade,
    content_type text not null check (content_type in ('image/png', 'image/svg+xml')),
    bytes        bytea not null check (length(bytes) between 1 and 262144),
    -- hex SHA-256 of the bytes: the logo's URL changes when it does (long caching)
    sha256       text not null,
    updated_at   timestamptz not null default now()
);

-- Attribution: a workspace belongs to at most one reseller, recording when and how.
create type attribution_channel as enum ('referral_link', 'host', 'admin', 'api');

alter table workspaces
    add column reseller_id uuid references resellers (reseller_id),
    add column attributed_at timestamptz,
    add column attributed_via attribution_channel,
    -- the customer agreed to show its owner's email to its reseller (masked otherwise)
    add column share_email_with_reseller boolean not null default false,
    add constraint workspaces_attribution_complete check (
        (reseller_id is null) = (attributed_at is null)
        and (reseller_id is null) = (attributed_via is null));
create index workspaces_reseller_idx on workspaces (reseller_id, created_at desc, workspace_id)
    where reseller_id is not null;

-- One row per followed referral link (the funnel's first step).
create table referral_clicks (
    referral_click_id bigint generated always as identity primary key,
    reseller_id       uuid not null references resellers (reseller_id) on delete cascade,
    clicked_at        timestamptz not null default now()
);
create index referral_clicks_reseller_time_idx on referral_clicks (reseller_id, clicked_at);

-- Payouts: approved commissions of one reseller and currency, paid together.
create type payout_status as enum ('draft', 'paid');

create table payouts (
    payout_id    uuid primary key default gen_random_uuid(),
    reseller_id  uuid not null references resellers (reseller_id),
    currency     text not null check (currency ~ '^[a-z]{3}$'),
    -- Σ of its commissions (reversals of paid commissions included): what is paid
    amount_minor bigint not null check (amount_minor > 0),
    status       payout_status not null default 'draft',
    -- the bank transfer's reference, set when marked paid
    reference    text check (length(reference) between 1 and 200),
    created_at   timestamptz not null default now(),
    paid_at      timestamptz,
    check ((status = 'paid') = (paid_at is not null) and (status = 'paid') = (reference is not null))
);
create index payouts_reseller_idx on payouts (reseller_id, created_at desc, payout_id);

-- Commissions: one per paid invoice or paid top-up of an attributed workspace, and the
-- reversals that follow its refunds and disputes (never an edit of the amount).
create type commission_status as enum ('pending', 'approved', 'paid');
create type commission_kind as enum ('commission', 'reversal');
create type commission_source as enum ('top_up', 'invoice');

create table commissions (
    commission_id        uuid primary key default gen_random_uuid(),
    reseller_id          uuid not null references resellers (reseller_id),
    workspace_id         uuid not null references workspaces (workspace_id),
    kind                 commission_kind not null,
    source               commission_source not null,
    -- the payment: a Checkout session (`cs_...`) or an invoice (`in_...`)
    source_id            text not null,
    -- what refunds and disputes name (`pi_...`), when known
    payment_intent_id    text,
    -- a reversal: the commission it reverses (or restores, when a dispute is won)
    reverses             uuid references commissions (commission_id),
    -- a reversal: the Stripe event that moved it (one reversal per commission and event)
    reference            text,
    -- the payment as paid, tax included (refunds and disputes are shares of it)
    paid_minor           bigint not null check (paid_minor >= 0),
    -- the payment net of tax (a commission) or the share withdrawn (a reversal, signed
    -- like `amount_minor`)
    base_minor           bigint not null,
    rate_bps             integer not null check (rate_bps between 0 and 10000),
    -- commission: floor(base × rate / 10000) ≥ 0; reversal: negative (taken back) or
    -- positive (restored after a won dispute)
    amount_minor         bigint not null,
    currency             text not null check (currency ~ '^[a-z]{3}$'),
    status               commission_status not null default 'pending',
    -- when the payment was made (Stripe's clock: the event's `created`)
    earned_at            timestamptz not null,
    -- approved once Stripe's clock passes this (earned_at + hold_days)
    approve_after        timestamptz not null,
    approved_at          timestamptz,
    payout_id            uuid references payouts (payout_id),
    paid_at              timestamptz,
    created_at           timestamptz not null default now(),
    check ((kind = 'commission') = (reverses is null)),
    check (kind = 'reversal' or amount_minor >= 0),
    check ((status = 'pending') = (approved_at is null)),
    check ((status = 'paid') = (paid_at is not null)),
    check (status <> 'paid' or payout_id is not null)
);
create unique index commissions_once_per_payment_key on commissions (source, source_id)
    where kind = 'commission';
create unique index commissions_reversal_once_key on commissions (reverses, reference)
    where kind = 'reversal';
create index commissions_reseller_time_idx on commissions (reseller_id, earned_at desc, commission_id);
create index commissions_payment_intent_idx on commissions (payment_intent_id)
    where payment_intent_id is not null;
create index commissions_due_idx on commissions (approve_after) where status = 'pending';
create index commissions_unpaid_approved_idx on commissions (reseller_id, currency)
    where status = 'approved' and payout_id is null;
create index commissions_payout_idx on commissions (payout_id) where payout_id is not null;

-- Reseller API keys: as workspace keys, only a SHA-256 is stored; shown once.
create table reseller_api_keys (
    reseller_api_key_id uuid primary key default gen_random_uuid(),
    reseller_id         uuid not null references resellers (reseller_id) on delete cascade,
    name                text not null check (length(name) between 1 and 100),
    key_prefix          text not null,
    key_hash            bytea not null unique,
    created_by          uuid references users (user_id) on delete set null,
    created_at          timestamptz not null default now(),
    last_used_at        timestamptz,
    revoked_at          timestamptz
);
create index reseller_api_keys_reseller_idx on reseller_api_keys (reseller_id);
