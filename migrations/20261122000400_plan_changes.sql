-- Upgrades confirmed on /billing. The pro-rata allowance difference is granted when
-- Stripe reports the proration invoice paid (invoice.paid, billing_reason
-- subscription_update), keyed by that invoice, so an unpaid upgrade grants nothing.
create table plan_changes (
    plan_change_id         uuid primary key default gen_random_uuid(),
    workspace_id           uuid not null references workspaces (workspace_id),
    stripe_subscription_id text not null,
    from_plan_code         text not null references plans (plan_code),
    to_plan_code           text not null references plans (plan_code),
    -- credits to grant when paid: floor((new - old allowance) × remaining / period)
    credits                bigint not null check (credits >= 0),
    stripe_invoice_id      text unique,
    created_at             timestamptz not null default now()
);
create index plan_changes_pending_idx on plan_changes (stripe_subscription_id) where stripe_invoice_id is null;
