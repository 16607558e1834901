-- The ledger gets a third figure, debt, and the database itself now guards
-- `balance = Σ ledger` (issue 6, "the web app cannot break the ledger").
--
-- Debt (DESIGN.md "Credits"): a refunded or disputed top-up is reversed by a ledger
-- entry; what was already spent cannot be taken from a bucket (buckets never go
-- negative), so it is recorded as debt. Debt blocks consumption until later purchased
-- credits settle it. For every workspace:
--   plan_credits = Σ plan_delta, purchased_credits = Σ purchased_delta, debt = Σ debt_delta.

alter table balances
    add column debt bigint not null default 0 check (debt >= 0);

alter table ledger_entries
    add column debt_delta bigint not null default 0,
    add column debt_after bigint not null default 0;

-- One append path for every balance change: consumption, grants, resets, reversals,
-- adjustments and the demo seed all call this function (src/ledger/db.rs wraps it).
-- It locks the balance row, applies the deltas, and writes the entry with the balances
-- after it. A referenced entry (kind <> usage) is written at most once per workspace,
-- kind and reference: a repeat returns no row and changes nothing. A delta that would
-- take a figure below zero violates the balances' CHECK and fails the statement.
create function ledger_append(
    p_workspace_id    uuid,
    p_kind            ledger_entry_kind,
    p_plan_delta      bigint,
    p_purchased_delta bigint,
    p_debt_delta      bigint,
    p_description     text,
    p_reference       text,
    p_created_at      timestamptz default null
) returns setof ledger_entries language plpgsql as $$
declare
    v_bal   balances%rowtype;
    v_entry ledger_entries%rowtype;
begin
    if p_reference is not null and p_kind <> 'usage' then
        -- Lock first: appends of one workspace are serialised, so this check is exact
        -- (the unique index `ledger_entries_grant_once_key` backs it up).
        perform 1 from balances b where b.workspace_id = p_workspace_id for update;
        if exists (select 1 from ledger_entries e
                    where e.workspace_id = p_workspace_id and e.kind = p_kind
                      and e.reference = p_reference) then
            return;
        end if;
    end if;
    update balances b
       set plan_credits = b.plan_credits + p_plan_delta,
           purchased_credits = b.purchased_credits + p_purchased_delta,
           debt = b.debt + p_debt_delta,
           updated_at = now()
     where b.workspace_id = p_workspace_id
    returning * into v_bal;
    if not found then
        raise exception 'workspace % has no balance', p_workspace_id
            using errcode = 'foreign_key_violation';
    end if;
    insert into ledger_entries (workspace_id, kind, plan_delta, purchased_delta, debt_delta,
            plan_balance_after, purchased_balance_after, debt_after, description, reference,
            created_at)
    values (p_workspace_id, p_kind, p_plan_delta, p_purchased_delta, p_debt_delta,
            v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, p_description,
            p_reference, coalesce(p_created_at, now()))
    returning * into v_entry;
    return next v_entry;
end $$;

-- Every new entry must continue its workspace's ledger (its balances-after are the
-- previous entry's plus its deltas) and be the balance row as this transaction has
-- it: an entry without its balance change is refused at once.
create function ledger_entries_continue_chain() returns trigger language plpgsql as $$
declare
    v_prev ledger_entries%rowtype;
    v_bal  balances%rowtype;
begin
    select * into v_bal from balances b where b.workspace_id = new.workspace_id;
    select * into v_prev from ledger_entries e
     where e.workspace_id = new.workspace_id
     order by e.ledger_entry_id desc limit 1;
    if new.plan_balance_after <> coalesce(v_prev.plan_balance_after, 0) + new.plan_delta
       or new.purchased_balance_after <> coalesce(v_prev.purchased_balance_after, 0) + new.purchased_delta
       or new.debt_after <> coalesce(v_prev.debt_after, 0) + new.debt_delta then
        raise exception 'ledger entry does not continue the ledger of workspace %', new.workspace_id
            using errcode = 'check_violation';
    end if;
    if v_bal.plan_credits is distinct from new.plan_balance_after
       or v_bal.purchased_credits is distinct from new.purchased_balance_after
       or v_bal.debt is distinct from new.debt_after then
        raise exception 'balance of workspace % does not match its ledger', new.workspace_id
            using errcode = 'check_violation';
    end if;
    return new;
end $$;
create trigger ledger_entries_continue_chain before insert on ledger_entries
    for each row execute function ledger_entries_continue_chain();

-- At commit, a workspace's balance row must equal its newest ledger entry's balances
-- (zero when it has none): a balance changed without its entry, or changed again
-- after it, is refused. Together with the chain above this is `balance = Σ ledger`,
-- whoever writes.
create function ledger_balance_matches() returns trigger language plpgsql as $$
declare
    v_bal  balances%rowtype;
    v_last ledger_entries%rowtype;
begin
    select * into v_bal from balances b where b.workspace_id = new.workspace_id;
    if not found then
        return null;  -- the workspace is being deleted
    end if;
    select * into v_last from ledger_entries e
     where e.workspace_id = new.workspace_id
     order by e.ledger_entry_id desc limit 1;
    if v_bal.plan_credits <> coalesce(v_last.plan_balance_after, 0)
       or v_bal.purchased_credits <> coalesce(v_last.purchased_balance_after, 0)
       or v_bal.debt <> coalesce(v_last.debt_after, 0) then
        raise exception 'balance of workspace % does not match its ledger', new.workspace_id
            using errcode = 'check_violation';
    end if;
    return null;
end $$;
create constraint trigger balances_match_ledger
    after insert or update of plan_credits, purchased_credits, debt on balances
    deferrable initially deferred
    for each row execute function ledger_balance_matches();

-- Plan rate limits of the metering API (DESIGN.md "Default catalog"), enforced per
-- workspace with GCRA (the generic cell rate algorithm, RFC 2697's sibling used by
-- ATM networks and most API gateways): `tat_us` is the theoretical arrival time of the
-- next call, in microseconds since the epoch. A plan of L calls per minute emits one
-- call every T = 60 s / L and allows bursts of L. Kept in Postgres so several billfold
-- processes share one limit.
create table rate_limit_states (
    workspace_id uuid primary key references workspaces (workspace_id) on delete cascade,
    tat_us       bigint not null
);

create type consume_outcome as enum (
    'charged', 'replayed', 'insufficient_credits', 'in_debt', 'rate_limited',
    'unknown_key', 'unknown_feature', 'feature_not_in_plan', 'idempotency_conflict'
);

-- Consume credits in one round trip (DESIGN.md "Credits"): authenticate the API key,
-- replay an idempotent retry (answered whatever the rate), apply the plan's rate limit,
-- check the feature and entitlement, refuse while the workspace owes credits, take plan
-- credits first and then purchased credits through ledger_append, and record the usage
-- event. The balance row lock serialises every change of one workspace, so the
-- idempotency lookup and the rate limit after it are exact. Only `charged` writes a
-- ledger entry; every outcome after the rate limit counts as a call.
drop function consume_credits(bytea, text, bigint, text, bytea);
create function consume_credits(
    p_key_hash bytea, p_feature text, p_quantity bigint, p_idempotency_key text, p_request_hash bytea
) returns table (
    outcome consume_outcome, workspace_id uuid, charged bigint, plan_credits bigint,
    purchased_credits bigint, debt bigint, required bigint, available bigint,
    rate_limit integer, rate_remaining integer, rate_reset_ms bigint, retry_after_ms bigint
) language plpgsql as $$
#variable_conflict use_column
declare
    v_key       api_keys%rowtype;
    v_plan      plans%rowtype;
    v_cost      bigint;
    v_group     text;
    v_bal       balances%rowtype;
    v_prev      usage_events%rowtype;
    v_take      bigint;
    v_unlim     boolean;
    v_entry     ledger_entries%rowtype;
    v_event_id  uuid := gen_random_uuid();
    v_limit     integer;
    v_remaining integer;
    v_reset_ms  bigint;
    v_now_us    bigint;
    v_period_us bigint;
    v_tau_us    bigint;
    v_tat_us    bigint;
begin
    select * into v_key from api_keys k where k.key_hash = p_key_hash and k.revoked_at is null;
    if not found then
        return query select 'unknown_key'::consume_outcome, null::uuid, 0::bigint, 0::bigint,
            0::bigint, 0::bigint, 0::bigint, 0::bigint, null::integer, null::integer,
            null::bigint, null::bigint;
        return;
    end if;

    select * into v_bal from balances b where b.workspace_id = v_key.workspace_id for update;

    select * into v_prev from usage_events u
     where u.workspace_id = v_key.workspace_id and u.idempotency_key = p_idempotency_key;
    if found then
        if v_prev.request_hash <> p_request_hash then
            return query select 'idempotency_conflict'::consume_outcome, v_key.workspace_id,
                0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                null::integer, null::integer, null::bigint, null::bigint;
        else
            return query select 'replayed'::consume_outcome, v_key.workspace_id,
                v_prev.credits_charged, v_prev.plan_balance_after, v_prev.purchased_balance_after,
                0::bigint, 0::bigint, 0::bigint, null::integer, null::integer, null::bigint,
                null::bigint;
        end if;
        return;
    end if;

    select p.* into v_plan from workspaces w join plans p using (plan_code)
     where w.workspace_id = v_key.workspace_id;

    v_limit := v_plan.rate_limit_per_min;
    if v_limit is not null then
        v_now_us := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
        v_period_us := 60000000 / v_limit;
        v_tau_us := v_period_us * (v_limit - 1);
        select r.tat_us into v_tat_us from rate_limit_states r where r.workspace_id = v_key.workspace_id;
        v_tat_us := greatest(coalesce(v_tat_us, v_now_us), v_now_us);
        if v_tat_us - v_now_us > v_tau_us then
            return query select 'rate_limited'::consume_outcome, v_key.workspace_id, 0::bigint,
                v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, 0::bigint, 0::bigint,
                v_limit, 0, (v_tat_us - v_now_us + 999) / 1000,
                (v_tat_us - v_now_us - v_tau_us + 999) / 1000;
            return;
        end if;
        v_tat_us := v_tat_us + v_period_us;
        insert into rate_limit_states (workspace_id, tat_us) values (v_key.workspace_id, v_tat_us)
        on conflict (workspace_id) do update set tat_us = excluded.tat_us;
        v_remaining := greatest(0, (v_tau_us + v_period_us - (v_tat_us - v_now_us)) / v_period_us);
        v_reset_ms := (v_tat_us - v_now_us + 999) / 1000;
    end if;

    select f.credit_cost, f.feature_group into v_cost, v_group from features f where f.feature_code = p_feature;
    if not found then
        return query select 'unknown_feature'::consume_outcome, v_key.workspace_id, 0::bigint,
            v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, 0::bigint, 0::bigint,
            v_limit, v_remaining, v_reset_ms, null::bigint;
        return;
    end if;

    if not exists (select 1 from plan_entitlements e where e.plan_code = v_plan.plan_code and e.feature_group = v_group) then
        return query select 'feature_not_in_plan'::consume_outcome, v_key.workspace_id, 0::bigint,
            v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, 0::bigint, 0::bigint,
            v_limit, v_remaining, v_reset_ms, null::bigint;
        return;
    end if;

    v_cost := v_cost * p_quantity;
    if v_bal.debt > 0 then
        return query select 'in_debt'::consume_outcome, v_key.workspace_id, 0::bigint,
            v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, v_cost,
            v_bal.plan_credits + v_bal.purchased_credits, v_limit, v_remaining, v_reset_ms,
            null::bigint;
        return;
    end if;

    v_unlim := v_plan.monthly_credits is null;
    if not v_unlim and v_bal.plan_credits + v_bal.purchased_credits < v_cost then
        return query select 'insufficient_credits'::consume_outcome, v_key.workspace_id, 0::bigint,
            v_bal.plan_credits, v_bal.purchased_credits, v_bal.debt, v_cost,
            v_bal.plan_credits + v_bal.purchased_credits, v_limit, v_remaining, v_reset_ms,
            null::bigint;
        return;
    end if;

    -- Unlimited plans record usage with zero balance impact.
    v_take := case when v_unlim then 0 else least(v_bal.plan_credits, v_cost) end;
    select * into v_entry from ledger_append(v_key.workspace_id, 'usage',
        -v_take, case when v_unlim then 0 else -(v_cost - v_take) end, 0,
        p_feature || ' × ' || p_quantity
            || case when v_unlim then ' (' || v_cost || ' credits, unlimited plan)' else '' end,
        v_event_id::text);

    insert into usage_events (usage_event_id, workspace_id, api_key_id, feature_code, quantity,
        credits_charged, idempotency_key, request_hash, plan_balance_after, purchased_balance_after)
    values (v_event_id, v_key.workspace_id, v_key.api_key_id, p_feature, p_quantity, v_cost,
        p_idempotency_key, p_request_hash, v_entry.plan_balance_after, v_entry.purchased_balance_after);

    -- last_used_at is advisory: write it at most once a minute to keep hot keys cheap
    update api_keys k set last_used_at = now()
     where k.api_key_id = v_key.api_key_id
       and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute');

    return query select 'charged'::consume_outcome, v_key.workspace_id, v_cost,
        v_entry.plan_balance_after, v_entry.purchased_balance_after, v_entry.debt_after,
        0::bigint, 0::bigint, v_limit, v_remaining, v_reset_ms, null::bigint;
end $$;
