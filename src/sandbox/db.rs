//! SQL of the sandbox: the generic object store, idempotency keys, the clock, events,
//! webhook deliveries and injected faults (tables in `migrations/sandbox/`).
//! Free functions on `&mut PgConnection`; callers own the transaction.

use serde_json::Value;
use sqlx::PgConnection;

/// The sandbox's current time in Unix seconds: the database clock plus the sandbox
/// clock offset (zero until a test clock moves it).
pub(crate) async fn now(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select floor(extract(epoch from now()))::bigint + offset_seconds from sandbox_clocks",
    )
    .fetch_one(conn)
    .await
}

pub(crate) async fn insert_object(
    conn: &mut PgConnection,
    object_id: &str,
    object_type: &str,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into sandbox_objects (object_id, object_type, data) values ($1, $2, $3)")
        .bind(object_id)
        .bind(object_type)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts an object under a caller-chosen id; `false` when an object of any type
/// already has that id.
pub(crate) async fn insert_object_if_absent(
    conn: &mut PgConnection,
    object_id: &str,
    object_type: &str,
    data: &Value,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into sandbox_objects (object_id, object_type, data) values ($1, $2, $3)
         on conflict (object_id) do nothing",
    )
    .bind(object_id)
    .bind(object_type)
    .bind(data)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Which objects of one type a list request wants, newest first.
#[derive(Debug)]
pub(crate) struct ObjectQuery<'a> {
    pub(crate) object_type: &'a str,
    /// A JSON object the stored object must contain (`data @> matching`), e.g.
    /// `{"active": true, "product": "prod_..."}`.
    pub(crate) matching: Value,
    /// Only objects with one of these ids.
    pub(crate) ids: Option<&'a [String]>,
    /// Only objects whose `lookup_key` is one of these.
    pub(crate) lookup_keys: Option<&'a [String]>,
    /// Only objects created before this one (keyset pagination).
    pub(crate) starting_after: Option<&'a str>,
    pub(crate) limit: i64,
}

/// Up to `limit` objects matching `query`, newest first.
pub(crate) async fn list_objects(
    conn: &mut PgConnection,
    query: &ObjectQuery<'_>,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select o.data from sandbox_objects o
         where o.object_type = $1
           and o.data @> $2
           and ($3::text[] is null or o.object_id = any($3))
           and ($4::text[] is null or o.data->>'lookup_key' = any($4))
           and ($5::text is null or (o.created_at, o.object_id) < (
                   select c.created_at, c.object_id from sandbox_objects c
                   where c.object_id = $5))
         order by o.created_at desc, o.object_id desc
         limit $6",
    )
    .bind(query.object_type)
    .bind(&query.matching)
    .bind(query.ids)
    .bind(query.lookup_keys)
    .bind(query.starting_after)
    .bind(query.limit)
    .fetch_all(conn)
    .await
}

/// Serialises changes to one price lookup key until the transaction ends, so two
/// requests cannot both take a free key or both transfer it.
pub(crate) async fn lock_lookup_key(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('sandbox price lookup key ' || $1, 0))",
    )
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// The price holding a lookup key, locked until the transaction ends.
pub(crate) async fn lock_price_by_lookup_key(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select data from sandbox_objects
         where object_type = 'price' and data->>'lookup_key' = $1
         for update",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// An object of the given type by id.
pub(crate) async fn find_object(
    conn: &mut PgConnection,
    object_type: &str,
    object_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("select data from sandbox_objects where object_id = $1 and object_type = $2")
        .bind(object_id)
        .bind(object_type)
        .fetch_optional(conn)
        .await
}

/// Like [`find_object`], and locks the row until the transaction ends.
pub(crate) async fn lock_object(
    conn: &mut PgConnection,
    object_type: &str,
    object_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select data from sandbox_objects where object_id = $1 and object_type = $2 for update",
    )
    .bind(object_id)
    .bind(object_type)
    .fetch_optional(conn)
    .await
}

pub(crate) async fn update_object(
    conn: &mut PgConnection,
    object_id: &str,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("update sandbox_objects set data = $2, updated_at = now() where object_id = $1")
        .bind(object_id)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// A request seen before under the same idempotency key.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct IdempotentRequest {
    pub(crate) request_hash: String,
    /// `None` while the first request is still running.
    pub(crate) response_status: Option<i32>,
    pub(crate) response_body: Option<String>,
}

/// Claims an idempotency key for a new request; `false` when the key is taken (the
/// call waits for a concurrent first request to commit its claim).
pub(crate) async fn claim_idempotency_key(
    conn: &mut PgConnection,
    key: &str,
    method: &str,
    path: &str,
    request_hash: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into sandbox_idempotency_keys
             (idempotency_key, request_method, request_path, request_hash)
         values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(key)
    .bind(method)
    .bind(path)
    .bind(request_hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub(crate) async fn find_idempotent_request(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<IdempotentRequest>, sqlx::Error> {
    sqlx::query_as(
        "select request_hash, response_status, response_body
         from sandbox_idempotency_keys where idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Saves the response to replay for later requests with this key.
pub(crate) async fn save_idempotent_response(
    conn: &mut PgConnection,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update sandbox_idempotency_keys set response_status = $2, response_body = $3
         where idempotency_key = $1",
    )
    .bind(key)
    .bind(i32::from(status))
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees a key whose request failed inside the sandbox, so a retry runs again.
pub(crate) async fn release_idempotency_key(
    conn: &mut PgConnection,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from sandbox_idempotency_keys where idempotency_key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores an event and queues its delivery to the webhook endpoint. `created_at` is
/// the statement's clock, so events emitted in one transaction keep their order.
pub(crate) async fn insert_event(
    conn: &mut PgConnection,
    event_id: &str,
    event_type: &str,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with event as (
             insert into sandbox_events (event_id, event_type, data, created_at)
             values ($1, $2, $3, clock_timestamp())
             returning event_id
         )
         insert into sandbox_webhook_deliveries (event_id) select event_id from event",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}

/// An event with `pending_webhooks` counted from its unfinished deliveries.
pub(crate) async fn find_event(
    conn: &mut PgConnection,
    event_id: &str,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select e.data || jsonb_build_object('pending_webhooks', (
                    select count(*) from sandbox_webhook_deliveries d
                    where d.event_id = e.event_id and d.status = 'pending'))
         from sandbox_events e where e.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await
}

/// A delivery attempt claimed by this process.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClaimedDelivery {
    pub(crate) delivery_id: i64,
    /// Attempts including this one.
    pub(crate) attempt_count: i32,
    /// The event JSON exactly as it is signed and sent.
    pub(crate) payload: String,
}

/// Claims up to `limit` due deliveries and counts the attempt. The claim is a lease:
/// `next_attempt_at` moves `lease_ms` ahead, so another process (or this one after a
/// crash) takes the delivery over only if the outcome is never recorded.
pub(crate) async fn claim_due_deliveries(
    conn: &mut PgConnection,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "with due as (
             select d.delivery_id, e.data::text as payload
             from sandbox_webhook_deliveries d join sandbox_events e using (event_id)
             where d.status = 'pending' and d.next_attempt_at <= now()
             order by d.next_attempt_at, d.delivery_id
             limit $1
             for update of d skip locked
         )
         update sandbox_webhook_deliveries d
         set attempt_count = d.attempt_count + 1,
             next_attempt_at = now() + $2 * interval '1 millisecond',
             updated_at = now()
         from due
         where d.delivery_id = due.delivery_id
         returning d.delivery_id, d.attempt_count, due.payload",
    )
    .bind(limit)
    .bind(lease_ms)
    .fetch_all(conn)
    .await
}

/// How an attempt ended.
#[derive(Debug)]
pub(crate) enum AttemptOutcome {
    Succeeded {
        status: u16,
    },
    /// Failed; retry after `retry_in_ms`, or give up when `None`.
    Failed {
        status: Option<u16>,
        error: String,
        retry_in_ms: Option<i64>,
    },
}

pub(crate) async fn record_attempt(
    conn: &mut PgConnection,
    delivery_id: i64,
    outcome: &AttemptOutcome,
) -> Result<(), sqlx::Error> {
    let (status, response_status, error, retry_in_ms) = match outcome {
        AttemptOutcome::Succeeded { status } => ("succeeded", Some(*status), None, None),
        AttemptOutcome::Failed {
            status,
            error,
            retry_in_ms: Some(ms),
        } => ("pending", *status, Some(error.as_str()), Some(*ms)),
        AttemptOutcome::Failed {
            status,
            error,
            retry_in_ms: None,
        } => ("failed", *status, Some(error.as_str()), None),
    };
    sqlx::query(
        "update sandbox_webhook_deliveries
         set status = $2, last_response_status = $3, last_error = $4,
             next_attempt_at = now() + $5 * interval '1 millisecond', updated_at = now()
         where delivery_id = $1",
    )
    .bind(delivery_id)
    .bind(status)
    .bind(response_status.map(i32::from))
    .bind(error)
    .bind(retry_in_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Milliseconds until the next pending delivery is due (negative when overdue).
pub(crate) async fn next_delivery_due_in_ms(
    conn: &mut PgConnection,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "select (extract(epoch from min(next_attempt_at) - now()) * 1000)::bigint
         from sandbox_webhook_deliveries where status = 'pending'",
    )
    .fetch_one(conn)
    .await
}

/// Moves the sandbox clock forward so that [`now`] returns `at` (never backwards).
pub(crate) async fn set_now(conn: &mut PgConnection, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update sandbox_clocks
         set offset_seconds = greatest(offset_seconds, $1 - floor(extract(epoch from now()))::bigint)",
    )
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many of a customer's invoices have a number (are finalized).
pub(crate) async fn count_customer_invoices_numbered(
    conn: &mut PgConnection,
    customer: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from sandbox_objects
         where object_type = 'invoice' and data->>'customer' = $1 and data->>'number' is not null",
    )
    .bind(customer)
    .fetch_one(conn)
    .await
}

/// A customer's open invoices, oldest first, locked until the transaction ends.
pub(crate) async fn lock_open_invoices(
    conn: &mut PgConnection,
    customer: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select data from sandbox_objects
         where object_type = 'invoice' and data->>'customer' = $1 and data->>'status' = 'open'
         order by created_at, object_id
         for update",
    )
    .bind(customer)
    .fetch_all(conn)
    .await
}

/// A customer's subscriptions, oldest first, locked until the transaction ends.
pub(crate) async fn lock_customer_subscriptions(
    conn: &mut PgConnection,
    customer: &str,
) -> Result<Vec<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select data from sandbox_objects
         where object_type = 'subscription' and data->>'customer' = $1
         order by created_at, object_id
         for update",
    )
    .bind(customer)
    .fetch_all(conn)
    .await
}

/// The live (active or past_due) subscription whose period ends first, if it ends by
/// `until`, locked until the transaction ends.
pub(crate) async fn lock_next_due_subscription(
    conn: &mut PgConnection,
    until: i64,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select data from sandbox_objects
         where object_type = 'subscription'
           and data->>'status' in ('active', 'past_due')
           and (data#>>'{items,data,0,current_period_end}')::bigint <= $1
         order by (data#>>'{items,data,0,current_period_end}')::bigint, object_id
         limit 1
         for update",
    )
    .bind(until)
    .fetch_optional(conn)
    .await
}

/// How far the sandbox clock is ahead of real time, in seconds.
pub(crate) async fn clock_offset(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select offset_seconds from sandbox_clocks")
        .fetch_one(conn)
        .await
}

/// The channel `events::emit` notifies (on commit) so that the webhook worker of every
/// process wakes at once, whichever process emitted the event.
pub(crate) const EVENTS_CHANNEL: &str = "billfold_sandbox_events";

/// Wakes the webhook workers listening on [`EVENTS_CHANNEL`] when the caller's
/// transaction commits (PostgreSQL folds identical notifications of one transaction).
pub(crate) async fn notify_new_event(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, '')")
        .bind(EVENTS_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// A row of `sandbox_faults`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FaultRow {
    pub(crate) fault_id: i64,
    pub(crate) method: Option<String>,
    pub(crate) path_prefix: String,
    pub(crate) delay_ms: i32,
    pub(crate) status: Option<i32>,
    pub(crate) remaining: Option<i32>,
    /// Unix seconds.
    pub(crate) created: i64,
}

/// A new fault (validated by the caller; the table's checks hold as well).
#[derive(Debug)]
pub(crate) struct NewFault<'a> {
    pub(crate) method: Option<&'a str>,
    pub(crate) path_prefix: &'a str,
    pub(crate) delay_ms: i32,
    pub(crate) status: Option<i32>,
    pub(crate) remaining: Option<i32>,
}

const FAULT_COLUMNS: &str = "fault_id, method, path_prefix, delay_ms, status, remaining, \
                             floor(extract(epoch from created_at))::bigint as created";

pub(crate) async fn insert_fault(
    conn: &mut PgConnection,
    fault: &NewFault<'_>,
) -> Result<FaultRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "insert into sandbox_faults (method, path_prefix, delay_ms, status, remaining)
         values ($1, $2, $3, $4, $5)
         returning {FAULT_COLUMNS}"
    ))
    .bind(fault.method)
    .bind(fault.path_prefix)
    .bind(fault.delay_ms)
    .bind(fault.status)
    .bind(fault.remaining)
    .fetch_one(conn)
    .await
}

/// Every fault, oldest first.
pub(crate) async fn list_faults(conn: &mut PgConnection) -> Result<Vec<FaultRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {FAULT_COLUMNS} from sandbox_faults order by fault_id"
    ))
    .fetch_all(conn)
    .await
}

/// Deletes every fault; returns how many there were.
pub(crate) async fn delete_faults(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("delete from sandbox_faults")
        .execute(conn)
        .await?
        .rows_affected())
}

/// Deletes one fault; `false` when there is none with this id.
pub(crate) async fn delete_fault(
    conn: &mut PgConnection,
    fault_id: i64,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("delete from sandbox_faults where fault_id = $1")
            .bind(fault_id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// What a fault does to the request it applies to.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FaultHit {
    pub(crate) delay_ms: i32,
    pub(crate) status: Option<i32>,
}

/// The fault that applies to a request (`path` under the sandbox mount, e.g.
/// `/v1/subscriptions/sub_1`), counting the use: one with `remaining` 1 is deleted.
/// The most specific fault wins (a method before none, then the longest prefix),
/// then the oldest. Concurrent requests queue on the fault's row, so a fault applies
/// exactly `remaining` times.
pub(crate) async fn take_fault(
    conn: &mut PgConnection,
    method: &str,
    path: &str,
) -> Result<Option<FaultHit>, sqlx::Error> {
    sqlx::query_as(
        "with hit as (
             select fault_id from sandbox_faults
             where (method is null or method = $1)
               and ($2 = path_prefix or starts_with($2, path_prefix || '/'))
             order by (method is not null) desc, length(path_prefix) desc, fault_id
             limit 1
             for update
         ),
         used_up as (
             delete from sandbox_faults f using hit
             where f.fault_id = hit.fault_id and f.remaining = 1
             returning f.delay_ms, f.status
         ),
         counted as (
             update sandbox_faults f set remaining = f.remaining - 1
             from hit
             where f.fault_id = hit.fault_id and f.remaining > 1
             returning f.delay_ms, f.status
         ),
         lasting as (
             select f.delay_ms, f.status from sandbox_faults f join hit using (fault_id)
             where f.remaining is null
         )
         select delay_ms, status from used_up
         union all select delay_ms, status from counted
         union all select delay_ms, status from lasting",
    )
    .bind(method)
    .bind(path)
    .fetch_optional(conn)
    .await
}
