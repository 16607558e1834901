-- Background jobs (src/jobs): a Postgres queue claimed with `for update skip locked`,
-- so several billfold processes share it. A job is claimed in one short statement
-- (status running, a lease until `locked_until`), run with no transaction or lock
-- held, then finished; a job whose process died is claimed again when its lease ends.
-- Failures are retried with exponential backoff until `max_attempts`, then `failed`.
-- Rows stay for the admin pages (view, replay, skip).

create type job_status as enum ('queued', 'running', 'succeeded', 'failed', 'skipped');

create table jobs (
    job_id       bigint generated always as identity primary key,
    -- what to run: `stripe_event`, `free_allowance`, `expire_top_ups`, ...
    kind         text not null,
    -- deduplication: one job per kind and key (a Stripe event id, a period)
    key          text not null,
    payload      jsonb not null default '{}',
    status       job_status not null default 'queued',
    -- attempts started so far (the running one included); also a fencing token
    attempts     integer not null default 0,
    max_attempts integer not null default 15 check (max_attempts > 0),
    -- when the job is due (the next try after a failure)
    run_at       timestamptz not null default now(),
    locked_until timestamptz,
    locked_by    text,
    last_error   text,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    finished_at  timestamptz,
    unique (kind, key)
);
create index jobs_due_idx on jobs (run_at) where status in ('queued', 'running');

-- The webhook inbox (DESIGN.md "Stripe"): an event is verified, stored here and
-- committed before the answer; a `stripe_event` job applies it. `processed_at` is set
-- in the transaction that applies it (exactly once); `skipped_at` when an admin skips it.
alter table stripe_events
    add column skipped_at timestamptz;

-- Subscriptions are mirrored from what Stripe answers to a fetch made before the
-- applying transaction opens. `fetched_at` is when that fetch started (database clock):
-- a fetch older than what is stored never overwrites it, so two workers racing on one
-- subscription converge on the newest state without a lock held across the call.
alter table subscriptions
    add column fetched_at timestamptz not null default '-infinity';
