//! SQL of the job queue (table `jobs`): enqueue, claim with `for update skip locked`,
//! finish, fail with backoff, and the admin actions (retry now, skip).

use sqlx::PgConnection;
use time::OffsetDateTime;

/// The `pg_notify` channel a new job wakes runners on.
pub const CHANNEL: &str = "billfold_jobs";

/// State of a job (Postgres enum `job_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "job_status", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for `run_at`.
    Queued,
    /// Claimed by a runner until `locked_until`.
    Running,
    /// Done.
    Succeeded,
    /// Gave up after `max_attempts`; an admin may retry it.
    Failed,
    /// An admin decided it must not run.
    Skipped,
}

/// A job a runner has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Primary key.
    pub job_id: i64,
    /// Which handler runs it.
    pub kind: String,
    /// Its deduplication key (a Stripe event id, a period).
    pub key: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// This attempt's number (1-based); fences the finish against a stale runner.
    pub attempts: i32,
    /// Attempts allowed before it is `failed`.
    pub max_attempts: i32,
}

/// A job as the admin pages list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// Primary key.
    pub job_id: i64,
    /// Handler.
    pub kind: String,
    /// Deduplication key.
    pub key: String,
    /// Where it stands.
    pub status: JobStatus,
    /// Attempts made.
    pub attempts: i32,
    /// When it runs next (queued) or ran last.
    pub run_at: OffsetDateTime,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When it succeeded, failed for good or was skipped.
    pub finished_at: Option<OffsetDateTime>,
}

/// Queues a job of `kind` for `key`, due at `run_at` (now when `None`), unless one
/// with the same kind and key exists (whatever its state). Returns whether it was
/// queued. Wakes runners when the caller's transaction commits.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    key: &str,
    payload: &serde_json::Value,
    run_at: Option<OffsetDateTime>,
    max_attempts: i32,
) -> anyhow::Result<bool> {
    let queued = sqlx::query(
        "insert into jobs (kind, key, payload, run_at, max_attempts)
         values ($1, $2, $3, coalesce($4, now()), $5)
         on conflict (kind, key) do nothing",
    )
    .bind(kind)
    .bind(key)
    .bind(payload)
    .bind(run_at)
    .bind(max_attempts)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if queued {
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(kind)
            .execute(conn)
            .await?;
    }
    Ok(queued)
}

/// Claims the most overdue job of one of `kinds`: queued and due, or running with an
/// expired lease (its runner died). One statement; no lock is held afterwards.
pub async fn claim(
    conn: &mut PgConnection,
    kinds: &[&str],
    runner: &str,
    lease_secs: f64,
) -> anyhow::Result<Option<ClaimedJob>> {
    Ok(sqlx::query_as::<_, ClaimedJob>(
        "with next as (
             select job_id from jobs
              where kind = any($1)
                and ((status = 'queued' and run_at <= now())
                     or (status = 'running' and locked_until < now()))
              order by run_at
              limit 1
              for update skip locked)
         update jobs j
            set status = 'running', attempts = j.attempts + 1,
                locked_until = now() + make_interval(secs => $3), locked_by = $2,
                updated_at = now()
           from next
          where j.job_id = next.job_id
         returning j.job_id, j.kind, j.key, j.payload, j.attempts, j.max_attempts",
    )
    .bind(kinds)
    .bind(runner)
    .bind(lease_secs)
    .fetch_optional(conn)
    .await?)
}

/// Marks a claimed job done. `false` when another runner took it over meanwhile.
pub async fn succeed(conn: &mut PgConnection, job: &ClaimedJob) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update jobs set status = 'succeeded', finished_at = now(), locked_until = null,
                last_error = null, updated_at = now()
          where job_id = $1 and attempts = $2 and status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.attempts)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Records a failed attempt: queued again after `retry_in_ms`, or `failed` once its
/// attempts are used up. `false` when another runner took it over meanwhile.
pub async fn fail(
    conn: &mut PgConnection,
    job: &ClaimedJob,
    error: &str,
    retry_in_ms: i64,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update jobs set
                status = case when attempts >= max_attempts then 'failed'::job_status else 'queued'::job_status end,
                finished_at = case when attempts >= max_attempts then now() end,
                run_at = now() + make_interval(secs => $4::double precision / 1000),
                locked_until = null, last_error = $3, updated_at = now()
          where job_id = $1 and attempts = $2 and status = 'running'",
    )
    .bind(job.job_id)
    .bind(job.attempts)
    .bind(error)
    .bind(retry_in_ms)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Milliseconds until the next queued job of `kinds` is due (`None`: none queued).
pub async fn next_due_in_ms(
    conn: &mut PgConnection,
    kinds: &[&str],
) -> anyhow::Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        // `greatest` ignores nulls: without the `case`, no queued job would read as
        // "due now" and the runner would spin.
        "select case when min(run_at) is null then null
                     else greatest(0, (extract(epoch from min(run_at) - now()) * 1000)::bigint) end
           from jobs where kind = any($1) and status = 'queued'",
    )
    .bind(kinds)
    .fetch_one(conn)
    .await?)
}

/// The job of `kind` and `key`, if any.
pub async fn find(conn: &mut PgConnection, kind: &str, key: &str) -> anyhow::Result<Option<Job>> {
    Ok(sqlx::query_as::<_, Job>(
        "select job_id, kind, key, status, attempts, run_at, last_error, finished_at
           from jobs where kind = $1 and key = $2",
    )
    .bind(kind)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// An admin's "replay": a failed, skipped or waiting job runs again now with fresh
/// attempts. A running job is left alone. Returns whether it was requeued.
pub async fn retry_now(conn: &mut PgConnection, job_id: i64) -> anyhow::Result<bool> {
    let requeued = sqlx::query(
        "update jobs set status = 'queued', attempts = 0, run_at = now(), finished_at = null,
                locked_until = null, updated_at = now()
          where job_id = $1 and status <> 'running'
          returning kind",
    )
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await?;
    if requeued.is_some() {
        sqlx::query("select pg_notify($1, 'retry')")
            .bind(CHANNEL)
            .execute(conn)
            .await?;
    }
    Ok(requeued.is_some())
}

/// An admin's "skip": a job that has not succeeded never runs (again).
pub async fn skip(conn: &mut PgConnection, job_id: i64) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update jobs set status = 'skipped', finished_at = now(), locked_until = null,
                updated_at = now()
          where job_id = $1 and status in ('queued', 'failed')",
    )
    .bind(job_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Deletes succeeded and skipped jobs finished before `before` (housekeeping).
pub async fn purge_finished(
    conn: &mut PgConnection,
    before: OffsetDateTime,
) -> anyhow::Result<u64> {
    Ok(sqlx::query(
        "delete from jobs where status in ('succeeded', 'skipped') and finished_at < $1",
    )
    .bind(before)
    .execute(conn)
    .await?
    .rows_affected())
}
