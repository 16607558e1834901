-- Subscriptions and invoices mirrored from Stripe (Stripe is the source of truth for
-- payments; these rows let pages render without calling Stripe).

create table subscriptions (
    stripe_subscription_id text primary key,
    workspace_id           uuid not null references workspaces (workspace_id),
    stripe_customer_id     text not null,
    -- Stripe's status: incomplete, incomplete_expired, trialing, active, past_due,
    -- canceled, unpaid, paused
    status                 text not null,
    stripe_item_id         text not null,
    stripe_price_id        text not null,
    -- the plan whose price this is (null for a price billfold does not know)
    plan_code              text references plans (plan_code),
    current_period_start   timestamptz not null,
    current_period_end     timestamptz not null,
    cancel_at_period_end   boolean not null default false,
    ended_at               timestamptz,
    updated_at             timestamptz not null default now()
);
create index subscriptions_workspace_idx on subscriptions (workspace_id);

create table invoices (
    stripe_invoice_id      text primary key,
    workspace_id           uuid not null references workspaces (workspace_id),
    stripe_subscription_id text,
    number                 text,
    -- draft, open, paid, uncollectible, void; never goes back from paid
    status                 text not null,
    billing_reason         text,
    amount_due             bigint not null,
    amount_paid            bigint not null,
    currency               text not null,
    hosted_invoice_url     text,
    invoice_pdf            text,
    period_start           timestamptz not null,
    period_end             timestamptz not null,
    created_at             timestamptz not null
);
create index invoices_workspace_idx on invoices (workspace_id, created_at desc);
