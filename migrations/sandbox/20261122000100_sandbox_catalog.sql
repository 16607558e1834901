-- Products and prices in the Stripe sandbox (src/sandbox/prices.rs).
--
-- Prices live in the generic `sandbox_objects` store. Stripe lets at most one price hold
-- a lookup key (`transfer_lookup_key` moves it); this index enforces that and serves
-- `GET /v1/prices?lookup_keys[]=...`.
create unique index sandbox_objects_price_lookup_key_idx
    on sandbox_objects ((data->>'lookup_key'))
    where object_type = 'price' and data->>'lookup_key' is not null;
