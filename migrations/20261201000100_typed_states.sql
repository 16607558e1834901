-- Typed states instead of free text: Stripe's subscription and invoice statuses become
-- Postgres enums (src/subscriptions/status.rs mirrors them), so a typo in code or a
-- status Stripe never sends is refused by the database.

-- https://docs.stripe.com/api/subscriptions/object#subscription_object-status
create type subscription_status as enum (
    'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled',
    'unpaid', 'paused'
);
alter table subscriptions
    alter column status type subscription_status using status::subscription_status;

-- https://docs.stripe.com/api/invoices/object#invoice_object-status
create type invoice_status as enum ('draft', 'open', 'paid', 'uncollectible', 'void');
alter table invoices
    alter column status type invoice_status using status::invoice_status;

-- Ledger kinds for reversals: a refunded top-up (`refund`, which existed), a disputed
-- one (`dispute`), and a dispute the business won (`dispute_won`, credits restored).
alter type ledger_entry_kind add value if not exists 'dispute';
alter type ledger_entry_kind add value if not exists 'dispute_won';
