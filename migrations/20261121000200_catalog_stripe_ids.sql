-- Where each sellable catalog entry lives in Stripe, written by `billfold stripe sync`.
-- The price id is the active price under the entry's lookup key; a changed amount
-- gets a new price (Stripe prices are immutable), so this column moves with it.
alter table plans
    add column stripe_product_id text,
    add column stripe_price_id   text;
alter table credit_packs
    add column stripe_product_id text,
    add column stripe_price_id   text;
