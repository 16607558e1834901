-- ledger_append's grant-once lookup, fixed to use its index under a generic plan.
-- PL/pgSQL caches a statement's plan; after a few calls it may switch to a generic
-- plan, where `e.kind = p_kind` does not prove the partial index
-- `ledger_entries_grant_once_key`'s predicate (`kind <> 'usage' and reference is not
-- null`), so every grant scanned the workspace's whole ledger (millions of usage
-- entries for a busy workspace). Stating the predicate in the query keeps the index.

create or replace function ledger_append(
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
        -- The repeated `kind <> 'usage' and reference is not null` is the partial
        -- index's predicate: with it a cached generic plan can still use the index
        -- instead of scanning every entry of the workspace.
        if exists (select 1 from ledger_entries e
                    where e.workspace_id = p_workspace_id and e.kind = p_kind
                      and e.reference = p_reference
                      and e.kind <> 'usage' and e.reference is not null) then
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
