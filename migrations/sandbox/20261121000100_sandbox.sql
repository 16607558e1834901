-- The built-in Stripe sandbox (src/sandbox, cargo feature `sandbox`).
--
-- These tables stand in for Stripe's own storage when billfold runs without a real
-- Stripe key. The app never reads them: it talks to the sandbox over HTTP through the
-- async-stripe client, exactly as it talks to Stripe.

-- Every Stripe object the sandbox has created (customers, checkout sessions, ...), stored
-- whole in Stripe's JSON shape so new object types need no new table.
create table sandbox_objects (
    -- Stripe id, e.g. `cus_...`, `cs_test_...`.
    object_id text primary key,
    -- Stripe's `object` field, e.g. `customer`, `checkout.session`.
    object_type text not null,
    -- The object as the API returns it (expandable-only fields such as a session's
    -- `line_items` are kept here and stripped when rendered).
    data jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index sandbox_objects_object_type_idx on sandbox_objects (object_type, created_at);

-- Idempotency keys of API requests, with the response to replay (Stripe keeps the
-- response of a keyed request and returns it for any retry with the same parameters).
create table sandbox_idempotency_keys (
    idempotency_key text primary key,
    request_method text not null,
    request_path text not null,
    -- sha-256 of method, path and body: a retry with other parameters is refused.
    request_hash text not null,
    -- Null while the first request is still running.
    response_status integer,
    response_body text,
    created_at timestamptz not null default now()
);

-- The sandbox clock: one row, an offset from real time that a test clock can move.
create table sandbox_clocks (
    clock_id boolean primary key default true check (clock_id),
    offset_seconds bigint not null default 0
);

insert into sandbox_clocks (clock_id) values (true);

-- Events in Stripe's `event` shape, served by `GET /v1/events/{id}`.
create table sandbox_events (
    -- `evt_...`
    event_id text primary key,
    -- e.g. `checkout.session.completed`.
    event_type text not null,
    -- The whole event JSON, exactly what is signed and delivered.
    data jsonb not null,
    created_at timestamptz not null default now()
);

-- Webhook delivery of each event to billfold's endpoint, with retries. Pending rows
-- survive a restart and are picked up by whichever process claims them first.
create table sandbox_webhook_deliveries (
    delivery_id bigint generated always as identity primary key,
    event_id text not null references sandbox_events (event_id),
    status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
    -- Attempts made so far, including one in flight.
    attempt_count integer not null default 0,
    -- When the next attempt is due; null once succeeded or given up.
    next_attempt_at timestamptz default now(),
    -- Outcome of the latest attempt: the HTTP status, or the connection error.
    last_response_status integer,
    last_error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index sandbox_webhook_deliveries_due_idx
    on sandbox_webhook_deliveries (next_attempt_at)
    where status = 'pending';
