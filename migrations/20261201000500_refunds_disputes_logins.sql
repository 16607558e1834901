-- Refunds and disputes (DESIGN.md "Refunds and disputes reverse").
--
-- Stripe reports them per payment (a payment intent): `charge.refunded` carries the
-- charge's cumulative `amount_refunded`, `charge.dispute.*` the dispute and its status.
-- They are kept per payment intent, whatever the payment was for and whichever arrives
-- first, so a refund delivered before the top-up it refunds is not lost: the top-up
-- applies it when it is granted.

-- The most Stripe has reported refunded of a payment (cumulative: the largest figure
-- wins whatever the order of deliveries).
create table payment_refunds (
    stripe_payment_intent_id text primary key,
    amount_minor             bigint not null check (amount_minor >= 0),
    amount_refunded_minor    bigint not null check (amount_refunded_minor >= 0),
    currency                 text not null check (currency ~ '^[a-z]{3}$'),
    updated_at               timestamptz not null default now()
);

-- https://docs.stripe.com/api/disputes/object#dispute_object-status
create type dispute_status as enum (
    'warning_needs_response', 'warning_under_review', 'warning_closed', 'needs_response',
    'under_review', 'won', 'lost', 'prevented'
);

create table disputes (
    stripe_dispute_id        text primary key,
    stripe_payment_intent_id text not null,
    amount_minor             bigint not null check (amount_minor >= 0),
    currency                 text not null check (currency ~ '^[a-z]{3}$'),
    status                   dispute_status not null,
    created_at               timestamptz not null default now(),
    updated_at               timestamptz not null default now()
);
create index disputes_payment_intent_idx on disputes (stripe_payment_intent_id);

-- A top-up's payment intent (from its completed Checkout session) and the credits the
-- ledger has taken back so far. The target is
-- ceil(credits × min(amount, refunded + amount under an open or lost dispute) / amount);
-- every refund or dispute event moves the ledger to it (a reversal, or a restoration
-- when a dispute is won), never editing an entry.
alter table top_ups
    add column stripe_payment_intent_id text,
    add column credits_reversed bigint not null default 0 check (credits_reversed >= 0),
    add column updated_at timestamptz not null default now();
create unique index top_ups_payment_intent_key on top_ups (stripe_payment_intent_id)
    where stripe_payment_intent_id is not null;

-- Addresses a user has signed in from (issue 6, "throttling that cannot be turned
-- against the user"): failed attempts from an unknown address count against the
-- account's own cap; from an address that signed in before they do not, so an attacker
-- guessing from elsewhere cannot lock the owner out of their usual address.
create table login_addresses (
    user_id         uuid not null references users (user_id) on delete cascade,
    client_address  inet not null,
    last_success_at timestamptz not null default now(),
    primary key (user_id, client_address)
);
