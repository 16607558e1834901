-- The quality multiplier (DESIGN.md "Credits": standard 1, pro 2): a metering call may
-- ask for `pro` quality and is charged twice the feature's cost. The usage event keeps
-- the quality; the ledger entry names the feature ("Graph query × 1 (pro, ×2)") rather
-- than its code. consume_credits and the function behind it take the quality as a
-- sixth argument; the five-argument versions are dropped (the app is their only caller).
alter table usage_events add column quality text not null default 'standard'
    check (quality in ('standard', 'pro'));

drop function consume_credits(bytea, text, bigint, text, bytea);
drop function consume_credits_unchecked(bytea, text, bigint, text, bytea);

create function consume_credits_unchecked(
    p_key_hash bytea, p_feature text, p_quantity bigint, p_idempotency_key text, p_request_hash bytea,
    p_quality text
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
    v_fname     text;
    v_times     bigint := case p_quality when 'standard' then 1 when 'pro' then 2 end;
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
    if v_times is null then
        raise exception 'unknown quality %', p_quality using errcode = 'invalid_parameter_value';
    end if;
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

    select f.credit_cost, f.feature_group, f.description into v_cost, v_group, v_fname from features f where f.feature_code = p_feature;
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

    v_cost := v_cost * p_quantity * v_times;
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
        v_fname || ' × ' || p_quantity
            || case when v_times > 1 then ' (' || p_quality || ', ×' || v_times || ')' else '' end
            || case when v_unlim then ' (' || v_cost || ' credits, unlimited plan)' else '' end,
        v_event_id::text);

    insert into usage_events (usage_event_id, workspace_id, api_key_id, feature_code, quantity,
        credits_charged, idempotency_key, request_hash, plan_balance_after, purchased_balance_after, quality)
    values (v_event_id, v_key.workspace_id, v_key.api_key_id, p_feature, p_quantity, v_cost,
        p_idempotency_key, p_request_hash, v_entry.plan_balance_after, v_entry.purchased_balance_after, p_quality);

    -- last_used_at is advisory: write it at most once a minute to keep hot keys cheap
    update api_keys k set last_used_at = now()
     where k.api_key_id = v_key.api_key_id
       and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute');

    return query select 'charged'::consume_outcome, v_key.workspace_id, v_cost,
        v_entry.plan_balance_after, v_entry.purchased_balance_after, v_entry.debt_after,
        0::bigint, 0::bigint, v_limit, v_remaining, v_reset_ms, null::bigint;
end $$;

-- As before: a suspended workspace is refused first, in the same round trip.
create function consume_credits(
    p_key_hash bytea, p_feature text, p_quantity bigint, p_idempotency_key text, p_request_hash bytea,
    p_quality text
) returns table (
    outcome consume_outcome, workspace_id uuid, charged bigint, plan_credits bigint,
    purchased_credits bigint, debt bigint, required bigint, available bigint,
    rate_limit integer, rate_remaining integer, rate_reset_ms bigint, retry_after_ms bigint
) language plpgsql as $$
#variable_conflict use_column
declare
    v_workspace uuid;
begin
    select w.workspace_id into v_workspace
      from api_keys k join workspaces w on w.workspace_id = k.workspace_id
     where k.key_hash = p_key_hash and k.revoked_at is null and w.suspended_at is not null;
    if found then
        return query select 'workspace_suspended'::consume_outcome, v_workspace, 0::bigint,
            0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, null::integer,
            null::integer, null::bigint, null::bigint;
        return;
    end if;
    return query select * from consume_credits_unchecked(p_key_hash, p_feature, p_quantity,
                                                        p_idempotency_key, p_request_hash, p_quality);
end;
$$;
