//! The audit log (issue 8, "Audit log"): what staff and users did, written in the
//! transaction of the change it records. Owns table `audit_events`.
//!
//! The database keeps it honest (`migrations/20261202000300_audit_log.sql`): rows
//! cannot be updated, deleted or truncated, and each insert is chained under a lock, its
//! `hash = SHA-256(prev_hash ‖ content)`, its `seq` one more than the last. [`verify`]
//! walks the chain and names the first event that was edited, removed or put out of
//! order, so even someone who switched the triggers off is found out.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::PgConnection;

use crate::ids::UserId;

/// An event to record. `action` is dotted lowercase (`auth.sign_in`,
/// `workspace.credits_adjusted`); `before`/`after` are the subject's relevant fields
/// as JSON; `reason` is what the actor gave (at most 1,000 characters).
#[derive(Debug, Clone, Default)]
pub struct NewAuditEvent<'a> {
    /// Who acted (`None`: billfold itself, or an unknown visitor).
    pub actor_user_id: Option<UserId>,
    /// Their email when it happened.
    pub actor_email: Option<&'a str>,
    /// What happened.
    pub action: &'a str,
    /// What it happened to: a kind (`user`, `workspace`, ...) and an id.
    pub subject: Option<(&'a str, String)>,
    /// The subject before.
    pub before: Option<Value>,
    /// The subject after.
    pub after: Option<Value>,
    /// Why, as the actor said.
    pub reason: Option<&'a str>,
    /// The request's `x-request-id`.
    pub request_id: Option<&'a str>,
    /// The client's address.
    pub client_address: Option<IpAddr>,
}

/// Appends an event in the caller's transaction; returns its place in the chain
/// (`seq`). Appends wait for each other until the transaction ends (the chain's lock),
/// so keep the transaction short.
pub async fn record(conn: &mut PgConnection, e: &NewAuditEvent<'_>) -> anyhow::Result<i64> {
    let (subject_type, subject_id) = match &e.subject {
        Some((kind, id)) => (Some(*kind), Some(id.as_str())),
        None => (None, None),
    };
    Ok(sqlx::query_scalar(
        "insert into audit_events (actor_user_id, actor_email, action, subject_type, subject_id,
                                   before, after, reason, request_id, client_address,
                                   seq, prev_hash, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, '', '')
         returning seq",
    )
    .bind(e.actor_user_id)
    .bind(e.actor_email)
    .bind(e.action)
    .bind(subject_type)
    .bind(subject_id)
    .bind(&e.before)
    .bind(&e.after)
    .bind(e.reason.map(|r| r.chars().take(1_000).collect::<String>()))
    .bind(e.request_id)
    .bind(
        e.client_address
            .map(sqlx::types::ipnetwork::IpNetwork::from),
    )
    .fetch_one(conn)
    .await?)
}

/// Appends an event done from the command line (an operator on the server: no user,
/// no address), in the caller's transaction; `command` is what ran
/// (`billfold payouts mark-paid`), kept as the request id.
pub async fn record_command(
    conn: &mut PgConnection,
    command: &str,
    action: &str,
    subject: (&str, String),
    after: Option<Value>,
) -> anyhow::Result<i64> {
    record(
        conn,
        &NewAuditEvent {
            action,
            subject: Some(subject),
            after,
            request_id: Some(command),
            ..Default::default()
        },
    )
    .await
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every event follows the one before and matches its hash.
    Intact {
        /// How many events the chain holds.
        events: i64,
    },
    /// The first event that does not.
    Broken {
        /// Its place in the chain.
        seq: i64,
        /// Its row id.
        audit_event_id: i64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Walks the whole chain in order (streamed: constant memory) and stops at the first
/// event that was edited (its hash no longer matches its content), follows a removed
/// event (a gap in `seq`, or a `prev_hash` that is not the previous event's hash), or
/// was inserted out of order.
pub async fn verify(conn: &mut PgConnection) -> anyhow::Result<Verified> {
    #[derive(sqlx::FromRow)]
    struct Row {
        seq: i64,
        audit_event_id: i64,
        prev_hash: Vec<u8>,
        hash: Vec<u8>,
        recomputed: Vec<u8>,
    }
    let mut rows = sqlx::query_as::<_, Row>(
        "select e.seq, e.audit_event_id, e.prev_hash, e.hash,
                sha256(e.prev_hash || audit_event_content(e)) as recomputed
           from audit_events e order by e.seq",
    )
    .fetch(conn);
    let mut last: Option<(i64, Vec<u8>)> = None;
    let mut events = 0;
    while let Some(row) = rows.try_next().await? {
        let broken = |reason| Verified::Broken {
            seq: row.seq,
            audit_event_id: row.audit_event_id,
            reason,
        };
        let (expected_seq, expected_prev) = match &last {
            Some((seq, hash)) => (seq + 1, hash.as_slice()),
            None => (1, &[][..]),
        };
        if row.seq != expected_seq {
            return Ok(broken(
                "events before it are missing (removed, or the chain was reordered)",
            ));
        }
        if row.prev_hash != expected_prev {
            return Ok(broken(
                "it does not follow the event before it (that one was removed, replaced or reordered)",
            ));
        }
        if row.hash != row.recomputed {
            return Ok(broken("its content was changed after it was written"));
        }
        events += 1;
        last = Some((row.seq, row.hash));
    }
    Ok(Verified::Intact { events })
}

/// The newest events, newest first (what an admin page or a test reads).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    /// Place in the chain.
    pub seq: i64,
    /// Who.
    pub actor_user_id: Option<UserId>,
    /// Their email then.
    pub actor_email: Option<String>,
    /// What.
    pub action: String,
    /// To what kind of thing.
    pub subject_type: Option<String>,
    /// Its id.
    pub subject_id: Option<String>,
    /// From where.
    pub client_address: Option<sqlx::types::ipnetwork::IpNetwork>,
    /// When.
    pub occurred_at: time::OffsetDateTime,
}

/// The newest `limit` events with `action` (any action: `None`).
pub async fn recent(
    conn: &mut PgConnection,
    action: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<AuditEvent>> {
    Ok(sqlx::query_as::<_, AuditEvent>(
        "select seq, actor_user_id, actor_email, action, subject_type, subject_id,
                client_address, occurred_at
           from audit_events where $1::text is null or action = $1
          order by seq desc limit $2",
    )
    .bind(action)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}
