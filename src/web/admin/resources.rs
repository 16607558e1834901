//! Every admin resource, as the generic list ([`super::list`]) reads it. Adding a
//! resource is adding a value here and, for its actions, a handler in
//! [`super::actions`].

use super::list::{Column, Filter, FilterKind, Kind, Resource};

const fn col(
    key: &'static str,
    label: &'static str,
    expr: &'static str,
    sort: Option<(&'static str, &'static str)>,
    kind: Kind,
) -> Column {
    Column {
        key,
        label,
        expr,
        sort,
        kind,
    }
}

const CREATED_FROM: &str = "Created from";
const CREATED_UNTIL: &str = "Created until";

/// Workspaces: the customers.
pub const WORKSPACES: Resource = Resource {
    slug: "workspaces",
    title: "Workspaces",
    singular: "workspace",
    from: "workspaces w
           join plans p on p.plan_code = w.plan_code
           join balances b on b.workspace_id = w.workspace_id
           left join lateral (select u.email from memberships m join users u using (user_id)
                               where m.workspace_id = w.workspace_id and m.role = 'owner'
                               order by m.created_at limit 1) o on true
           left join resellers r on r.reseller_id = w.reseller_id",
    id: "w.workspace_id::text",
    columns: &[
        col(
            "name",
            "Workspace",
            "w.name",
            Some(("w.name", "text")),
            Kind::Text,
        ),
        col("owner", "Owner", "o.email", None, Kind::Text),
        col(
            "plan",
            "Plan",
            "p.name || case when w.plan_override then ' (complimentary)' else '' end",
            Some(("p.name", "text")),
            Kind::Text,
        ),
        col(
            "credits",
            "Credits",
            "b.plan_credits + b.purchased_credits - b.debt",
            Some(("b.plan_credits + b.purchased_credits - b.debt", "bigint")),
            Kind::Num,
        ),
        col("reseller", "Reseller", "r.name", None, Kind::Text),
        col(
            "status",
            "Status",
            "case when w.suspended_at is not null then 'suspended' else 'active' end",
            None,
            Kind::Badge,
        ),
        col(
            "created",
            "Created",
            "to_char(w.created_at, 'YYYY-MM-DD HH24:MI')",
            Some(("w.created_at", "timestamptz")),
            Kind::Text,
        ),
    ],
    search: &[
        "w.name",
        "o.email",
        "w.workspace_id::text",
        "w.stripe_customer_id",
    ],
    search_hint: "Name, owner email, id or Stripe customer",
    filters: &[
        Filter {
            key: "plan",
            label: "Plan code",
            expr: "w.plan_code",
            kind: FilterKind::Contains,
        },
        Filter {
            key: "status",
            label: "Status",
            expr: "case when w.suspended_at is not null then 'suspended' else 'active' end",
            kind: FilterKind::Choice(&[("active", "Active"), ("suspended", "Suspended")]),
        },
        Filter {
            key: "from",
            label: CREATED_FROM,
            expr: "w.created_at",
            kind: FilterKind::From,
        },
        Filter {
            key: "until",
            label: CREATED_UNTIL,
            expr: "w.created_at",
            kind: FilterKind::Until,
        },
    ],
    default_sort: ("created", true),
    bulk: &[],
};

/// Users: people who sign in.
pub const USERS: Resource = Resource {
    slug: "users",
    title: "Users",
    singular: "user",
    from: "users u",
    id: "u.user_id::text",
    columns: &[
        col(
            "email",
            "Email",
            "u.email",
            Some(("u.email", "text")),
            Kind::Text,
        ),
        col(
            "staff",
            "Staff",
            "case when u.is_staff then 'staff' else '' end",
            None,
            Kind::Badge,
        ),
        col(
            "status",
            "Status",
            "case when u.suspended_at is not null then 'suspended' else 'active' end",
            None,
            Kind::Badge,
        ),
        col(
            "workspaces",
            "Workspaces",
            "(select count(*) from memberships m where m.user_id = u.user_id)",
            None,
            Kind::Num,
        ),
        col(
            "created",
            "Created",
            "to_char(u.created_at, 'YYYY-MM-DD HH24:MI')",
            Some(("u.created_at", "timestamptz")),
            Kind::Text,
        ),
    ],
    search: &["u.email", "u.user_id::text"],
    search_hint: "Email or id",
    filters: &[
        Filter {
            key: "staff",
            label: "Staff",
            expr: "case when u.is_staff then 'yes' else 'no' end",
            kind: FilterKind::Choice(&[("yes", "Staff"), ("no", "Not staff")]),
        },
        Filter {
            key: "status",
            label: "Status",
            expr: "case when u.suspended_at is not null then 'suspended' else 'active' end",
            kind: FilterKind::Choice(&[("active", "Active"), ("suspended", "Suspended")]),
        },
    ],
    default_sort: ("created", true),
    bulk: &[],
};

/// Resellers.
pub const RESELLERS: Resource = Resource {
    slug: "resellers",
    title: "Resellers",
    singular: "reseller",
    from: "resellers r",
    id: "r.reseller_id::text",
    columns: &[
        col(
            "name",
            "Reseller",
            "r.name",
            Some(("r.name", "text")),
            Kind::Text,
        ),
        col(
            "code",
            "Referral code",
            "r.referral_code",
            Some(("r.referral_code", "text")),
            Kind::Text,
        ),
        col(
            "rate",
            "Rate",
            "(r.commission_rate_bps / 100.0)::numeric(5,2) || ' %'",
            Some(("r.commission_rate_bps::bigint", "bigint")),
            Kind::Num,
        ),
        col("hold", "Hold (days)", "r.hold_days", None, Kind::Num),
        col(
            "customers",
            "Customers",
            "(select count(*) from workspaces w where w.reseller_id = r.reseller_id)",
            None,
            Kind::Num,
        ),
        col("status", "Status", "r.status", None, Kind::Badge),
        col(
            "created",
            "Created",
            "to_char(r.created_at, 'YYYY-MM-DD')",
            Some(("r.created_at", "timestamptz")),
            Kind::Text,
        ),
    ],
    search: &["r.name", "r.referral_code", "r.display_name"],
    search_hint: "Name or referral code",
    filters: &[Filter {
        key: "status",
        label: "Status",
        expr: "r.status",
        kind: FilterKind::Choice(&[
            ("active", "Active"),
            ("paused", "Paused"),
            ("closed", "Closed"),
        ]),
    }],
    default_sort: ("created", true),
    bulk: &[],
};

/// Reseller commissions and their reversals.
pub const COMMISSIONS: Resource = Resource {
    slug: "commissions",
    title: "Commissions",
    singular: "commission",
    from: "commissions c join resellers r using (reseller_id) join workspaces w using (workspace_id)",
    id: "c.commission_id::text",
    columns: &[
        col(
            "earned",
            "Earned",
            "to_char(c.earned_at, 'YYYY-MM-DD HH24:MI')",
            Some(("c.earned_at", "timestamptz")),
            Kind::Text,
        ),
        col(
            "reseller",
            "Reseller",
            "r.name",
            Some(("r.name", "text")),
            Kind::Text,
        ),
        col("customer", "Customer", "w.name", None, Kind::Text),
        col("kind", "Kind", "c.kind", None, Kind::Text),
        col("source", "Source", "c.source", None, Kind::Text),
        col(
            "amount",
            "Amount",
            "format_money(c.amount_minor, c.currency)",
            Some(("c.amount_minor", "bigint")),
            Kind::Num,
        ),
        col("status", "Status", "c.status", None, Kind::Badge),
        col(
            "approve_after",
            "Approves",
            "to_char(c.approve_after, 'YYYY-MM-DD')",
            Some(("c.approve_after", "timestamptz")),
            Kind::Text,
        ),
    ],
    search: &["r.name", "w.name", "c.source_id", "c.commission_id::text"],
    search_hint: "Reseller, customer, invoice or session id",
    filters: &[
        Filter {
            key: "status",
            label: "Status",
            expr: "c.status",
            kind: FilterKind::Choice(&[
                ("pending", "Pending"),
                ("approved", "Approved"),
                ("paid", "Paid"),
            ]),
        },
        Filter {
            key: "kind",
            label: "Kind",
            expr: "c.kind",
            kind: FilterKind::Choice(&[("commission", "Commission"), ("reversal", "Reversal")]),
        },
        Filter {
            key: "reseller",
            label: "Reseller code",
            expr: "r.referral_code",
            kind: FilterKind::Contains,
        },
    ],
    default_sort: ("earned", true),
    bulk: &[("approve", "Approve now")],
};

/// Reseller payouts.
pub const PAYOUTS: Resource = Resource {
    slug: "payouts",
    title: "Payouts",
    singular: "payout",
    from: "payouts o join resellers r using (reseller_id)",
    id: "o.payout_id::text",
    columns: &[
        col(
            "created",
            "Drafted",
            "to_char(o.created_at, 'YYYY-MM-DD')",
            Some(("o.created_at", "timestamptz")),
            Kind::Text,
        ),
        col(
            "reseller",
            "Reseller",
            "r.name",
            Some(("r.name", "text")),
            Kind::Text,
        ),
        col(
            "amount",
            "Amount",
            "format_money(o.amount_minor, o.currency)",
            Some(("o.amount_minor", "bigint")),
            Kind::Num,
        ),
        col(
            "commissions",
            "Commissions",
            "(select count(*) from commissions c where c.payout_id = o.payout_id)",
            None,
            Kind::Num,
        ),
        col("status", "Status", "o.status", None, Kind::Badge),
        col("reference", "Reference", "o.reference", None, Kind::Text),
        col(
            "paid",
            "Paid",
            "to_char(o.paid_at, 'YYYY-MM-DD')",
            None,
            Kind::Text,
        ),
    ],
    search: &["r.name", "o.reference", "o.payout_id::text"],
    search_hint: "Reseller, reference or id",
    filters: &[Filter {
        key: "status",
        label: "Status",
        expr: "o.status",
        kind: FilterKind::Choice(&[("draft", "Draft"), ("paid", "Paid")]),
    }],
    default_sort: ("created", true),
    bulk: &[],
};

/// The Stripe webhook inbox.
pub const WEBHOOK_EVENTS: Resource = Resource {
    slug: "webhook-events",
    title: "Webhook events",
    singular: "webhook event",
    from: "stripe_events e left join jobs j on j.kind = 'stripe_event' and j.key = e.stripe_event_id",
    id: "e.stripe_event_id",
    columns: &[
        col(
            "received",
            "Received",
            "to_char(e.received_at, 'YYYY-MM-DD HH24:MI:SS')",
            Some(("e.received_at", "timestamptz")),
            Kind::Text,
        ),
        col("id", "Event", "e.stripe_event_id", None, Kind::Text),
        col(
            "type",
            "Type",
            "e.event_type",
            Some(("e.event_type", "text")),
            Kind::Text,
        ),
        col(
            "status",
            "Status",
            "case when e.processed_at is not null then 'applied' when e.skipped_at is not null then 'skipped' when j.status = 'failed' then 'failed' else 'waiting' end",
            None,
            Kind::Badge,
        ),
        col(
            "attempts",
            "Attempts",
            "coalesce(j.attempts, 0)",
            None,
            Kind::Num,
        ),
        col(
            "error",
            "Last error",
            "left(j.last_error, 120)",
            None,
            Kind::Text,
        ),
    ],
    search: &["e.stripe_event_id", "e.event_type"],
    search_hint: "Event id or type",
    filters: &[Filter {
        key: "status",
        label: "Status",
        expr: "case when e.processed_at is not null then 'applied' when e.skipped_at is not null then 'skipped' when j.status = 'failed' then 'failed' else 'waiting' end",
        kind: FilterKind::Choice(&[
            ("waiting", "Waiting"),
            ("failed", "Failed"),
            ("applied", "Applied"),
            ("skipped", "Skipped"),
        ]),
    }],
    default_sort: ("received", true),
    bulk: &[("replay", "Replay")],
};

/// Background jobs.
pub const JOBS: Resource = Resource {
    slug: "jobs",
    title: "Jobs",
    singular: "job",
    from: "jobs j",
    id: "j.job_id::text",
    columns: &[
        col(
            "run_at",
            "Due",
            "to_char(j.run_at, 'YYYY-MM-DD HH24:MI:SS')",
            Some(("j.run_at", "timestamptz")),
            Kind::Text,
        ),
        col(
            "kind",
            "Kind",
            "j.kind",
            Some(("j.kind", "text")),
            Kind::Text,
        ),
        col("key", "Key", "j.key", None, Kind::Text),
        col("status", "Status", "j.status", None, Kind::Badge),
        col(
            "attempts",
            "Attempts",
            "j.attempts || ' / ' || j.max_attempts",
            None,
            Kind::Num,
        ),
        col(
            "error",
            "Last error",
            "left(j.last_error, 120)",
            None,
            Kind::Text,
        ),
    ],
    search: &["j.kind", "j.key"],
    search_hint: "Kind or key",
    filters: &[Filter {
        key: "status",
        label: "Status",
        expr: "j.status",
        kind: FilterKind::Choice(&[
            ("queued", "Queued"),
            ("running", "Running"),
            ("failed", "Failed"),
            ("succeeded", "Succeeded"),
            ("skipped", "Skipped"),
        ]),
    }],
    default_sort: ("run_at", true),
    bulk: &[("retry", "Retry now")],
};

/// The audit log.
pub const AUDIT_LOG: Resource = Resource {
    slug: "audit-log",
    title: "Audit log",
    singular: "audit event",
    from: "audit_events a",
    id: "a.seq::text",
    columns: &[
        col("seq", "#", "a.seq", Some(("a.seq", "bigint")), Kind::Num),
        col(
            "at",
            "When",
            "to_char(a.occurred_at, 'YYYY-MM-DD HH24:MI:SS')",
            None,
            Kind::Text,
        ),
        col("actor", "Actor", "a.actor_email", None, Kind::Text),
        col("action", "Action", "a.action", None, Kind::Text),
        col(
            "subject",
            "Subject",
            "a.subject_type || ' ' || a.subject_id",
            None,
            Kind::Text,
        ),
        col("reason", "Reason", "left(a.reason, 120)", None, Kind::Text),
        col(
            "address",
            "Address",
            "host(a.client_address)",
            None,
            Kind::Text,
        ),
    ],
    search: &[
        "a.action",
        "a.actor_email",
        "a.subject_id",
        "a.reason",
        "a.request_id",
    ],
    search_hint: "Action, actor, subject id, reason or request id",
    filters: &[
        Filter {
            key: "actor",
            label: "Actor email",
            expr: "a.actor_email",
            kind: FilterKind::Contains,
        },
        Filter {
            key: "action",
            label: "Action",
            expr: "a.action",
            kind: FilterKind::Contains,
        },
        Filter {
            key: "subject",
            label: "Subject id",
            expr: "a.subject_id",
            kind: FilterKind::Contains,
        },
        Filter {
            key: "from",
            label: "From",
            expr: "a.occurred_at",
            kind: FilterKind::From,
        },
        Filter {
            key: "until",
            label: "Until",
            expr: "a.occurred_at",
            kind: FilterKind::Until,
        },
    ],
    default_sort: ("seq", true),
    bulk: &[],
};

/// Plans of the catalog.
pub const PLANS: Resource = Resource {
    slug: "plans",
    title: "Plans",
    singular: "plan",
    from: "plans p",
    id: "p.plan_code",
    columns: &[
        col(
            "name",
            "Plan",
            "p.name",
            Some(("p.sort_order::bigint", "bigint")),
            Kind::Text,
        ),
        col("code", "Code", "p.plan_code", None, Kind::Text),
        col(
            "price",
            "Monthly price",
            "format_money(p.monthly_price_minor, p.currency)",
            Some(("p.monthly_price_minor", "bigint")),
            Kind::Num,
        ),
        col(
            "credits",
            "Credits / month",
            "coalesce(p.monthly_credits::text, 'unlimited')",
            None,
            Kind::Num,
        ),
        col(
            "rate",
            "Calls / min",
            "coalesce(p.rate_limit_per_min::text, 'unlimited')",
            None,
            Kind::Num,
        ),
        col(
            "stripe",
            "Stripe price",
            "p.stripe_price_id",
            None,
            Kind::Text,
        ),
        col(
            "workspaces",
            "Workspaces",
            "(select count(*) from workspaces w where w.plan_code = p.plan_code)",
            None,
            Kind::Num,
        ),
    ],
    search: &["p.name", "p.plan_code"],
    search_hint: "Name or code",
    filters: &[],
    default_sort: ("name", false),
    bulk: &[],
};

/// Credit packs of the catalog.
pub const CREDIT_PACKS: Resource = Resource {
    slug: "credit-packs",
    title: "Credit packs",
    singular: "credit pack",
    from: "credit_packs k",
    id: "k.credit_pack_code",
    columns: &[
        col(
            "name",
            "Pack",
            "k.name",
            Some(("k.sort_order::bigint", "bigint")),
            Kind::Text,
        ),
        col("code", "Code", "k.credit_pack_code", None, Kind::Text),
        col(
            "credits",
            "Credits",
            "k.credits",
            Some(("k.credits", "bigint")),
            Kind::Num,
        ),
        col(
            "price",
            "Price",
            "format_money(k.price_minor, k.currency)",
            Some(("k.price_minor", "bigint")),
            Kind::Num,
        ),
        col(
            "active",
            "On sale",
            "case when k.active then 'on sale' else 'off sale' end",
            None,
            Kind::Badge,
        ),
        col(
            "stripe",
            "Stripe price",
            "k.stripe_price_id",
            None,
            Kind::Text,
        ),
    ],
    search: &["k.name", "k.credit_pack_code"],
    search_hint: "Name or code",
    filters: &[],
    default_sort: ("name", false),
    bulk: &[],
};

/// Metered features and their credit costs.
pub const FEATURES: Resource = Resource {
    slug: "features",
    title: "Features",
    singular: "feature",
    from: "features f",
    id: "f.feature_code",
    columns: &[
        col(
            "code",
            "Feature",
            "f.feature_code",
            Some(("f.feature_code", "text")),
            Kind::Text,
        ),
        col(
            "description",
            "Description",
            "f.description",
            None,
            Kind::Text,
        ),
        col("group", "Group", "f.feature_group", None, Kind::Text),
        col(
            "cost",
            "Credits per use",
            "f.credit_cost",
            Some(("f.credit_cost", "bigint")),
            Kind::Num,
        ),
    ],
    search: &["f.feature_code", "f.description"],
    search_hint: "Code or description",
    filters: &[],
    default_sort: ("code", false),
    bulk: &[],
};

/// Every resource, in the order of the admin navigation.
pub const ALL: &[&Resource] = &[
    &WORKSPACES,
    &USERS,
    &RESELLERS,
    &COMMISSIONS,
    &PAYOUTS,
    &WEBHOOK_EVENTS,
    &JOBS,
    &AUDIT_LOG,
    &PLANS,
    &CREDIT_PACKS,
    &FEATURES,
];

/// The resource at `/admin/<slug>`.
pub fn by_slug(slug: &str) -> Option<&'static Resource> {
    ALL.iter().copied().find(|r| r.slug == slug)
}
