//! Background jobs on a Postgres queue (table `jobs`; SQL in [`db`]). `serve` runs a
//! [`Runner`]; `billfold worker` runs one alone. Several processes may run one each:
//! a job is claimed with `for update skip locked` in one short statement and run with
//! no transaction, row lock or advisory lock held, so a handler may call Stripe
//! (DESIGN.md "Jobs"); it opens its own short transactions to apply what it fetched.
//!
//! Failures are retried with exponential backoff (base × 2^(attempt − 1), capped at an
//! hour, ±20 % jitter) until the job's `max_attempts`, then kept as `failed` with the
//! last error, for the admin pages to replay or skip. A runner that dies leaves its job
//! `running` until the lease ends; another runner then claims it again, so handlers
//! must be idempotent (they are: business keys and `processed_at` make each effect
//! happen once).
//!
//! Why not a crate: underway (sqlx 0.8) runs each task inside a transaction holding an
//! advisory lock, which would hold a connection and a lock across every Stripe call;
//! apalis-postgres 1.0 needs sqlx 0.9 (a second sqlx beside tower-sessions' 0.8), and
//! apalis-sql 0.7 re-runs a failed job at the next poll with no backoff in storage.

pub mod db;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

pub use db::ClaimedJob;

/// The housekeeping job: finished jobs older than 30 days are deleted (the Stripe
/// events they applied stay in `stripe_events`).
pub const PURGE_JOB: &str = "purge_jobs";

/// Deletes succeeded and skipped jobs finished more than 30 days ago.
pub async fn purge(db: &PgPool) -> anyhow::Result<()> {
    let before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let purged = db::purge_finished(&mut *db.acquire().await?, before).await?;
    tracing::info!(purged, "old jobs purged");
    Ok(())
}

/// What a handler returns.
pub type JobFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs one claimed job.
pub type Handler = Arc<dyn Fn(ClaimedJob) -> JobFuture + Send + Sync>;

/// How a runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// Delay before the first retry (doubles each attempt).
    pub retry_base: Duration,
    /// Longest wait between looks at the queue when nothing wakes the runner.
    pub poll: Duration,
    /// How long a claimed job is this runner's; a handler running longer is stopped.
    pub lease: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            retry_base: Duration::from_secs(2),
            poll: Duration::from_secs(2),
            lease: Duration::from_secs(120),
        }
    }
}

/// A job queued on a fixed cadence: once per `every`, keyed by the time bucket, so
/// several processes queue it once.
#[derive(Debug, Clone, Copy)]
pub struct Periodic {
    /// The job's kind (a handler must be registered for it).
    pub kind: &'static str,
    /// Cadence.
    pub every: Duration,
}

/// Claims and runs jobs until shut down.
#[derive(Clone)]
pub struct Runner {
    db: PgPool,
    handlers: Arc<HashMap<&'static str, (Handler, i32)>>,
    periodic: Arc<Vec<Periodic>>,
    settings: RunnerSettings,
    name: Arc<str>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner over `db` with no handlers yet.
    pub fn new(db: PgPool, settings: RunnerSettings) -> Self {
        let name = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            db,
            handlers: Arc::new(HashMap::new()),
            periodic: Arc::new(Vec::new()),
            settings,
            name: name.into(),
        }
    }

    /// Registers the handler of `kind`; its jobs are tried at most `max_attempts` times.
    pub fn handle<F, Fut>(mut self, kind: &'static str, max_attempts: i32, f: F) -> Self
    where
        F: Fn(ClaimedJob) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |job| Box::pin(f(job)));
        Arc::make_mut(&mut self.handlers).insert(kind, (handler, max_attempts));
        self
    }

    /// Queues a job of `kind` every `every` (its handler must be registered).
    pub fn every(mut self, kind: &'static str, every: Duration) -> Self {
        Arc::make_mut(&mut self.periodic).push(Periodic { kind, every });
        self
    }

    /// Starts the runner's tasks; they stop when `shutdown` turns true (finishing the
    /// jobs in hand) or when the pool is closed.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(shutdown).await })
    }

    async fn run(self, shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        tasks.spawn(listen(self.db.clone(), Arc::clone(&wake), shutdown.clone()));
        if !self.periodic.is_empty() {
            tasks.spawn(schedule(self.clone(), shutdown.clone()));
        }
        for slot in 0..self.settings.concurrency.max(1) {
            tasks.spawn(self.clone().slot(slot, Arc::clone(&wake), shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// One job at a time: claim, run, record; wait when nothing is due.
    async fn slot(self, slot: usize, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let kinds = self.kinds();
        let runner = format!("{}/{slot}", self.name);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let claimed = match self.db.acquire().await {
                Ok(mut conn) => {
                    db::claim(
                        &mut conn,
                        &kinds,
                        &runner,
                        self.settings.lease.as_secs_f64(),
                    )
                    .await
                }
                Err(e) => Err(e.into()),
            };
            let wait = match claimed {
                Ok(Some(job)) => {
                    self.run_one(job).await;
                    continue;
                }
                Ok(None) => self.next_wait(&kinds).await,
                Err(e) if is_closed(&e) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "job runner cannot read the queue");
                    self.settings.poll
                }
            };
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn next_wait(&self, kinds: &[&str]) -> Duration {
        let due = match self.db.acquire().await {
            Ok(mut conn) => db::next_due_in_ms(&mut conn, kinds).await.ok().flatten(),
            Err(_) => None,
        };
        due.map_or(self.settings.poll, |ms| {
            Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(self.settings.poll)
        })
    }

    #[tracing::instrument(skip_all, fields(job_id = job.job_id, kind = %job.kind, key = %job.key, attempt = job.attempts))]
    async fn run_one(&self, job: ClaimedJob) {
        let Some((handler, _)) = self.handlers.get(job.kind.as_str()) else {
            return;
        };
        let outcome = if job.attempts > job.max_attempts {
            Err(anyhow::anyhow!(
                "its runner stopped during the last attempt"
            ))
        } else {
            // Stop a handler before its lease ends, so no other runner starts the job
            // while this one still works on it.
            let limit = self.settings.lease.mul_f64(0.8);
            match tokio::time::timeout(limit, handler(job.clone())).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("timed out after {limit:?}")),
            }
        };
        let recorded = match self.db.acquire().await {
            Ok(mut conn) => match &outcome {
                Ok(()) => db::succeed(&mut conn, &job).await,
                Err(e) => {
                    let delay = retry_delay(self.settings.retry_base, job.attempts);
                    let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    if job.attempts >= job.max_attempts {
                        tracing::error!(error = format!("{e:#}"), "job failed for good");
                    } else {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            retry_in_ms = ms,
                            "job failed; will retry"
                        );
                    }
                    db::fail(&mut conn, &job, &format!("{e:#}"), ms).await
                }
            },
            Err(e) => Err(e.into()),
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::info!("job was taken over by another runner"),
            Err(e) if is_closed(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "job outcome not recorded; it runs again after its lease")
            }
        }
    }
}

/// The wait after failed attempt `attempt` (1-based): `base × 2^(attempt − 1)`, at most
/// an hour, with ±20 % jitter so a burst of failures does not retry in lockstep.
pub fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let delay = base
        .saturating_mul(2_u32.saturating_pow(exp))
        .min(Duration::from_secs(3600));
    delay.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// Wakes the slots when a job is queued (`pg_notify` at commit) by any process. If
/// LISTEN is unavailable the slots still poll.
async fn listen(db: PgPool, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut listener = match PgListener::connect_with(&db).await {
        Ok(l) => l,
        Err(e) => {
            if !db.is_closed() {
                tracing::info!(error = %e, "job runner polls: cannot LISTEN");
            }
            return;
        }
    };
    if let Err(e) = listener.listen(db::CHANNEL).await {
        tracing::info!(error = %e, "job runner polls: cannot LISTEN");
        return;
    }
    loop {
        tokio::select! {
            received = listener.try_recv() => match received {
                Ok(Some(_)) => wake.notify_waiters(),
                // The connection was lost and re-established: jobs may have been queued
                // meanwhile.
                Ok(None) => wake.notify_waiters(),
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        }
        if db.is_closed() {
            return;
        }
    }
}

/// Queues the periodic jobs: at start, then every 30 s, each for its current time
/// bucket (`(kind, bucket)` is unique, so every process may do this).
async fn schedule(runner: Runner, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || runner.db.is_closed() {
            return;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for p in runner.periodic.iter() {
            let every = i64::try_from(p.every.as_secs().max(1)).unwrap_or(i64::MAX);
            let bucket = now - now.rem_euclid(every);
            let max_attempts = runner.handlers.get(p.kind).map_or(3, |(_, m)| *m);
            let queued = match runner.db.acquire().await {
                Ok(mut conn) => {
                    db::enqueue(
                        &mut conn,
                        p.kind,
                        &bucket.to_string(),
                        &serde_json::Value::Null,
                        None,
                        max_attempts,
                    )
                    .await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = queued
                && !is_closed(&e)
            {
                tracing::warn!(error = %e, kind = p.kind, "cannot queue periodic job");
            }
        }
    }
}

/// Whether an error means the pool was closed (shutdown), which is not a failure.
fn is_closed(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolClosed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour() {
        let base = Duration::from_secs(2);
        for (attempt, expected) in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 1024.0), (30, 3600.0)] {
            let d = retry_delay(base, attempt).as_secs_f64();
            assert!(
                (expected * 0.8..=expected * 1.2).contains(&d),
                "attempt {attempt}: {d}s, expected about {expected}s"
            );
        }
    }
}
