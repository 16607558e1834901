-- Hourly usage roll-ups (issue 9, "page cost flat from 10 thousand to 10 million usage
-- events"): one row per workspace, hour, feature and API key, kept by a trigger on
-- usage_events in the transaction that records the event. Charts, the usage page and
-- the back office read these instead of scanning events, so a 30-day chart reads at
-- most 720 rows per feature and key whatever the event count. Hours rather than days,
-- so days can be cut in the workspace's own time zone (whole-hour offsets exact).
create table usage_hourly (
    workspace_id uuid not null references workspaces (workspace_id),
    hour         timestamptz not null check (hour = date_trunc('hour', hour, 'UTC')),
    feature_code text not null references features (feature_code),
    -- null: usage not recorded through a key (the demo seed). No foreign key: keys are
    -- revoked, never deleted, and a set-null would merge rows under the unique index.
    api_key_id   uuid,
    events       bigint not null check (events > 0),
    quantity     bigint not null check (quantity > 0),
    credits      bigint not null check (credits >= 0)
);
create unique index usage_hourly_key_idx
    on usage_hourly (workspace_id, hour, feature_code, api_key_id) nulls not distinct;
create index usage_hourly_hour_idx on usage_hourly (hour) include (credits);

create function usage_hourly_add() returns trigger language plpgsql as $$
begin
    insert into usage_hourly as h (workspace_id, hour, feature_code, api_key_id, events, quantity, credits)
    values (new.workspace_id, date_trunc('hour', new.created_at, 'UTC'), new.feature_code,
            new.api_key_id, 1, new.quantity, new.credits_charged)
    on conflict (workspace_id, hour, feature_code, api_key_id)
    do update set events = h.events + 1,
                  quantity = h.quantity + excluded.quantity,
                  credits = h.credits + excluded.credits;
    return null;
end $$;

create trigger usage_events_roll_up after insert on usage_events
    for each row execute function usage_hourly_add();

-- Usage events are a record: once written, what is rolled up is neither changed nor
-- removed (the roll-ups would drift).
create function usage_events_are_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'usage_events is append-only' using errcode = 'insufficient_privilege';
end $$;
create trigger usage_events_append_only
    before update of workspace_id, created_at, feature_code, api_key_id, quantity, credits_charged
    or delete on usage_events
    for each row execute function usage_events_are_append_only();

insert into usage_hourly (workspace_id, hour, feature_code, api_key_id, events, quantity, credits)
select workspace_id, date_trunc('hour', created_at, 'UTC'), feature_code, api_key_id,
       count(*), sum(quantity), sum(credits_charged)
  from usage_events
 group by 1, 2, 3, 4;

-- The back office's per-day chart reads the roll-ups now: the covering index on every
-- event's time only cost writes.
drop index usage_events_time_idx;
