-- Plan credits granted per billing period (DESIGN.md "Plan changes cannot be gamed").
-- One row per period: a subscription period (keyed by subscription and period start) or
-- a free-plan month (keyed by workspace and period start, anchored on the sign-up day).
-- `high_water_credits` is the largest allowance paid for in the period (null once an
-- unlimited plan was paid for). A switch up grants only the pro-rata difference between
-- the new allowance and this mark, then raises it; a switch down never grants. So within
-- one period the plan credits granted never exceed the largest allowance paid for,
-- however the plan was switched (/billing, the portal, Stripe's dashboard).
create table allowance_periods (
    allowance_period_id    bigint generated always as identity primary key,
    workspace_id           uuid not null references workspaces (workspace_id) on delete cascade,
    -- null for a free-plan period
    stripe_subscription_id text,
    period_start           timestamptz not null,
    period_end             timestamptz not null check (period_end > period_start),
    -- the plan whose allowance is the high-water mark
    plan_code              text not null references plans (plan_code),
    high_water_credits     bigint check (high_water_credits >= 0),
    -- plan credits granted in this period (allowance + pro-rata upgrades)
    granted_credits        bigint not null default 0 check (granted_credits >= 0),
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);
create unique index allowance_periods_subscription_key
    on allowance_periods (stripe_subscription_id, period_start) where stripe_subscription_id is not null;
create unique index allowance_periods_free_key
    on allowance_periods (workspace_id, period_start) where stripe_subscription_id is null;

-- Upgrades asked for on /billing: the intent is recorded before Stripe is called
-- (`requested`), then `confirmed` or `failed` by the answer; a failed call leaves a
-- `failed` row and nothing else. The grant itself comes from the paid proration
-- invoice through the high-water mark; the intent only supplies the proration date the
-- customer was shown, so the credits granted are the credits previewed.
create type plan_change_status as enum ('requested', 'confirmed', 'failed');
alter table plan_changes
    add column status plan_change_status not null default 'confirmed',
    add column proration_date timestamptz,
    add column updated_at timestamptz not null default now();
update plan_changes set proration_date = created_at where proration_date is null;
alter table plan_changes alter column proration_date set not null;
alter table plan_changes alter column status set default 'requested';

-- Free-plan periods are months anchored on the sign-up day (`workspaces.created_at`),
-- counted in UTC: period k runs from anchor + k months to anchor + k+1 months (a day past
-- a month's end clamps: a 31 Jan anchor gives 28/29 Feb, then 31 Mar).
-- `free_period_index` is the k of the period containing `at`; `free_period_bound` the
-- start of period k.
create function free_period_index(p_anchor timestamptz, p_at timestamptz)
returns integer language sql immutable as $$
    select greatest(0, (extract(year from age(p_at at time zone 'utc', p_anchor at time zone 'utc')) * 12
                        + extract(month from age(p_at at time zone 'utc', p_anchor at time zone 'utc')))::integer)
$$;
create function free_period_bound(p_anchor timestamptz, p_index integer)
returns timestamptz language sql immutable as $$
    select ((p_anchor at time zone 'utc') + make_interval(months => p_index)) at time zone 'utc'
$$;

-- Free workspaces already running keep the period they are in: record it as granted, so
-- the first run of the monthly job does not hand out a second allowance this month.
insert into allowance_periods (workspace_id, period_start, period_end, plan_code,
                               high_water_credits, granted_credits)
select w.workspace_id,
       free_period_bound(w.created_at, free_period_index(w.created_at, now())),
       free_period_bound(w.created_at, free_period_index(w.created_at, now()) + 1),
       p.plan_code, p.monthly_credits, coalesce(p.monthly_credits, 0)
  from workspaces w join plans p using (plan_code)
 where p.monthly_price_minor = 0
   and not exists (select 1 from subscriptions s where s.workspace_id = w.workspace_id
                     and s.status in ('active', 'trialing', 'past_due'));
