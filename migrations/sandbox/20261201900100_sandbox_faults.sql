-- Faults injected into the Stripe sandbox's API for tests (src/sandbox/faults.rs).
--
-- A `/v1` request whose method and path match a fault first waits `delay_ms`, then
-- either goes on (no `status`) or gets a Stripe-shaped error with that HTTP status.
create table sandbox_faults (
    fault_id bigint generated always as identity primary key,
    -- `GET`, `POST` or `DELETE`; null matches every method.
    method text check (method in ('GET', 'POST', 'DELETE')),
    -- Whole path segments under the sandbox's mount: `/v1/subscriptions` matches
    -- `/v1/subscriptions` and `/v1/subscriptions/sub_1`, not `/v1/subscriptions_x`.
    path_prefix text not null
        check (path_prefix = '/v1' or (path_prefix like '/v1/%' and path_prefix not like '%/')),
    delay_ms integer not null default 0 check (delay_ms between 0 and 60000),
    -- The error's HTTP status; null lets the request go on after the delay.
    status integer check (status between 400 and 599),
    -- How many more requests it applies to; null until cleared. A fault used up is
    -- deleted.
    remaining integer check (remaining > 0),
    created_at timestamptz not null default now(),
    -- a fault that neither waits nor fails would do nothing
    check (delay_ms > 0 or status is not null)
);
