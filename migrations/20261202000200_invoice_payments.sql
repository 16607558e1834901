-- Which payment (a payment intent) paid which invoice, from `invoice_payment.paid`
-- (Stripe's API since 2025-03 names an invoice's payments only through its
-- InvoicePayment objects). Refunds and disputes name the payment intent: this is how
-- a refund of a subscription invoice finds the reseller commission earned on it.
create table invoice_payments (
    stripe_invoice_id        text not null,
    stripe_payment_intent_id text not null,
    created_at               timestamptz not null default now(),
    primary key (stripe_invoice_id, stripe_payment_intent_id)
);
create index invoice_payments_payment_intent_idx on invoice_payments (stripe_payment_intent_id);
