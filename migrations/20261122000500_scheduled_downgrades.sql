-- A downgrade takes effect at period end (DESIGN.md): the Stripe price changes now
-- without proration, so the next renewal bills the cheaper plan, while billfold keeps
-- the workspace on the current plan until `effective_at`.
alter table subscriptions
    add column scheduled_plan_code text references plans (plan_code),
    add column scheduled_from_plan_code text references plans (plan_code),
    add column scheduled_effective_at timestamptz;
