-- The audit log (issue 8, "Audit log"): who did what to what, when, from where; written
-- in the transaction of the change it records. Append-only (updates, deletes and
-- truncation are refused) and hash-chained: each row stores the previous row's hash
-- and a SHA-256 over that and its own content, so `billfold audit verify` finds any
-- row edited, deleted or inserted out of order, even by someone who could switch the
-- triggers off. Appends are serialised (a transaction-scoped advisory lock taken by the
-- insert trigger), so concurrent writers keep one chain.

create table audit_events (
    audit_event_id bigint generated always as identity primary key,
    -- the position in the chain: gap-free, given under the append lock (identity
    -- values are drawn before it, so they may commit out of order)
    seq            bigint not null unique,
    occurred_at    timestamptz not null default now(),
    -- who: a user (kept as id and email, no foreign key: the log outlives its users)
    actor_user_id  uuid,
    actor_email    text,
    -- what: `auth.sign_in`, `workspace.credits_adjusted`, ...
    action         text not null check (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    -- to what: `user` / `workspace` / ... and its id
    subject_type   text,
    subject_id     text,
    before         jsonb,
    after          jsonb,
    reason         text check (length(reason) <= 1000),
    request_id     text,
    client_address inet,
    prev_hash      bytea not null,
    hash           bytea not null unique
);
create index audit_events_actor_idx on audit_events (actor_user_id, audit_event_id desc);
create index audit_events_subject_idx on audit_events (subject_type, subject_id, audit_event_id desc);
create index audit_events_action_idx on audit_events (action, audit_event_id desc);

-- The content a row's hash covers, in one canonical text (jsonb prints its keys in a
-- fixed order); `verify` recomputes it the same way.
create function audit_event_content(e audit_events) returns bytea language sql immutable as $$
    select convert_to(concat_ws(chr(31),
        e.seq::text, e.audit_event_id::text,
        to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        coalesce(e.actor_user_id::text, ''), coalesce(e.actor_email, ''), e.action,
        coalesce(e.subject_type, ''), coalesce(e.subject_id, ''),
        coalesce(e.before::text, ''), coalesce(e.after::text, ''), coalesce(e.reason, ''),
        coalesce(e.request_id, ''), coalesce(host(e.client_address), '')), 'UTF8')
$$;

create function audit_events_chain() returns trigger language plpgsql as $$
declare
    v_prev bytea;
    v_seq  bigint;
begin
    perform pg_advisory_xact_lock(hashtext('billfold.audit_events'));
    select seq, hash into v_seq, v_prev from audit_events order by seq desc limit 1;
    new.seq := coalesce(v_seq, 0) + 1;
    new.prev_hash := coalesce(v_prev, '\x'::bytea);
    new.occurred_at := date_trunc('microseconds', clock_timestamp());
    new.hash := sha256(new.prev_hash || audit_event_content(new));
    return new;
end $$;
create trigger audit_events_chain before insert on audit_events
    for each row execute function audit_events_chain();

create function audit_events_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit_events is append-only (% refused)', tg_op
        using errcode = 'restrict_violation';
end $$;
create trigger audit_events_append_only before update or delete on audit_events
    for each row execute function audit_events_refuse_change();
create trigger audit_events_no_truncate before truncate on audit_events
    for each statement execute function audit_events_refuse_change();
