//! The one generic resource list every admin resource uses (DESIGN.md "Admin
//! resources"; Filament's and Django admin's list pages): full-text search, filters,
//! sortable columns, keyset pagination, bulk selection and a streamed CSV of the
//! filtered list. A resource is a [`Resource`] value (SQL fragments written in this
//! crate, never taken from a request); everything a request brings is bound as a
//! parameter.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sqlx::{PgPool, Row};

/// How a column is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain text.
    Text,
    /// Right-aligned (counts, credits, money).
    Num,
    /// A status badge.
    Badge,
}

/// One column: `expr` is a SQL expression of type text (or castable to it).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in `sort=`.
    pub key: &'static str,
    /// Header text.
    pub label: &'static str,
    /// What it shows (SQL, cast to text).
    pub expr: &'static str,
    /// How to sort by it: a non-null SQL expression and its type (`bigint`,
    /// `timestamptz`, `text`), or `None` when it is not sortable.
    pub sort: Option<(&'static str, &'static str)>,
    /// Presentation.
    pub kind: Kind,
}

/// What a filter compares.
#[derive(Debug, Clone, Copy)]
pub enum FilterKind {
    /// One of fixed values (`expr = value`).
    Choice(&'static [(&'static str, &'static str)]),
    /// Contains the text, case-insensitively.
    Contains,
    /// On or after the date (`expr >= date`).
    From,
    /// On or before the date (`expr < date + 1 day`).
    Until,
}

/// A filter: `f.<key>=value` in the query string.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    /// Its name (`f.<key>`).
    pub key: &'static str,
    /// Label.
    pub label: &'static str,
    /// SQL expression it tests (text for choices and contains, timestamptz for dates).
    pub expr: &'static str,
    /// How.
    pub kind: FilterKind,
}

/// A resource as the list shows it.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// Its path segment, `/admin/<slug>`.
    pub slug: &'static str,
    /// Page title.
    pub title: &'static str,
    /// One of it ("workspace").
    pub singular: &'static str,
    /// SQL `from` clause (tables and joins).
    pub from: &'static str,
    /// SQL expression of its id (text, unique).
    pub id: &'static str,
    /// Columns, first one links to the detail page.
    pub columns: &'static [Column],
    /// Expressions `q` is matched against (case-insensitive substring).
    pub search: &'static [&'static str],
    /// Search box placeholder.
    pub search_hint: &'static str,
    /// Filters.
    pub filters: &'static [Filter],
    /// Default sort column key and direction (descending: `true`).
    pub default_sort: (&'static str, bool),
    /// Bulk actions: name and button label.
    pub bulk: &'static [(&'static str, &'static str)],
}

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;
/// Most rows one bulk action takes.
pub const MAX_BULK: usize = 500;

/// What the query string asks for, checked against the resource.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Search text (trimmed, at most 200 characters).
    pub q: String,
    /// Sort column index into `columns`.
    pub sort: usize,
    /// Descending.
    pub desc: bool,
    /// Filter values by filter index (empty = not set).
    pub filters: Vec<String>,
    /// Keyset cursor: the last row's sort value and id (`value|id`; ids never hold
    /// a `|`).
    pub after: Option<(String, String)>,
}

impl ListQuery {
    /// Reads the query pairs; unknown keys are ignored, unknown sort columns or filter
    /// choices fall back to the default, a malformed cursor starts over.
    pub fn parse(resource: &Resource, pairs: &[(String, String)]) -> Self {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let default_sort = resource
            .columns
            .iter()
            .position(|c| c.key == resource.default_sort.0)
            .unwrap_or(0);
        let sort = get("sort")
            .and_then(|s| {
                resource
                    .columns
                    .iter()
                    .position(|c| c.key == s && c.sort.is_some())
            })
            .unwrap_or(default_sort);
        let desc = match get("dir") {
            Some("asc") => false,
            Some("desc") => true,
            _ => {
                if sort == default_sort {
                    resource.default_sort.1
                } else {
                    false
                }
            }
        };
        let filters = resource
            .filters
            .iter()
            .map(|f| {
                let v = get(&format!("f.{}", f.key)).unwrap_or("").trim();
                match f.kind {
                    FilterKind::Choice(options) if !options.iter().any(|(o, _)| *o == v) => {
                        String::new()
                    }
                    FilterKind::From | FilterKind::Until
                        if time::Date::parse(
                            v,
                            time::macros::format_description!("[year]-[month]-[day]"),
                        )
                        .is_err() =>
                    {
                        String::new()
                    }
                    _ => v.chars().take(200).collect(),
                }
            })
            .collect();
        let sort_type = resource.columns[sort].sort.map_or("text", |(_, ty)| ty);
        let after = get("after").and_then(|a| {
            let (value, id) = a.rsplit_once('|')?;
            cursor_fits(value, sort_type).then(|| (value.to_owned(), id.to_owned()))
        });
        Self {
            q: get("q").unwrap_or("").trim().chars().take(200).collect(),
            sort,
            desc,
            filters,
            after,
        }
    }

    /// The query string of this list without the cursor (for links and the CSV).
    pub fn href(&self, resource: &Resource, base: &str) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        for (f, v) in resource.filters.iter().zip(&self.filters) {
            if !v.is_empty() {
                s.append_pair(&format!("f.{}", f.key), v);
            }
        }
        s.append_pair("sort", resource.columns[self.sort].key);
        s.append_pair("dir", if self.desc { "desc" } else { "asc" });
        let qs = s.finish();
        format!("{base}?{qs}")
    }

    /// The link that sorts by column `i` (toggling the direction when it is the
    /// current one).
    pub fn sort_href(&self, resource: &Resource, i: usize) -> String {
        let mut other = self.clone();
        other.after = None;
        if other.sort == i {
            other.desc = !other.desc;
        } else {
            other.sort = i;
            other.desc = false;
        }
        other.href(resource, &format!("/admin/{}", resource.slug))
    }
}

/// Whether a cursor's sort value reads as the column's type (what PostgreSQL printed:
/// `2026-12-08 01:07:12.123456+00` for timestamptz), so binding it cannot fail.
fn cursor_fits(value: &str, sort_type: &str) -> bool {
    match sort_type {
        "bigint" => value.parse::<i64>().is_ok(),
        "timestamptz" => time::OffsetDateTime::parse(
            value,
            time::macros::format_description!(
                version = 2,
                "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][optional [:[offset_minute]]]"
            ),
        )
        .is_ok(),
        _ => true,
    }
}

/// A statement and its text parameters (each cast in the SQL where it is used).
struct Sql {
    text: String,
    binds: Vec<String>,
}

impl Sql {
    fn bind(&mut self, value: impl Into<String>) -> String {
        self.binds.push(value.into());
        format!("${}", self.binds.len())
    }
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The `where` clause of a list query (search and filters).
fn conditions(resource: &Resource, query: &ListQuery, sql: &mut Sql) -> Vec<String> {
    let mut conds = Vec::new();
    if !query.q.is_empty() && !resource.search.is_empty() {
        let p = sql.bind(like_pattern(&query.q));
        let any: Vec<String> = resource
            .search
            .iter()
            .map(|e| format!("({e}) ilike {p}"))
            .collect();
        conds.push(format!("({})", any.join(" or ")));
    }
    for (f, v) in resource.filters.iter().zip(&query.filters) {
        if v.is_empty() {
            continue;
        }
        let p = sql.bind(v.clone());
        conds.push(match f.kind {
            FilterKind::Choice(_) => format!("({})::text = {p}", f.expr),
            FilterKind::Contains => {
                sql.binds.pop();
                let p = sql.bind(like_pattern(v));
                format!("({})::text ilike {p}", f.expr)
            }
            FilterKind::From => format!("({}) >= {p}::date", f.expr),
            FilterKind::Until => format!("({}) < {p}::date + 1", f.expr),
        });
    }
    conds
}

fn select_list(resource: &Resource) -> String {
    resource
        .columns
        .iter()
        .map(|c| format!("({})::text", c.expr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One page of rows.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Rows: id and the cells, column by column.
    pub rows: Vec<(String, Vec<String>)>,
    /// Rows matching the search and filters, all pages.
    pub total: i64,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// Reads one page.
pub async fn fetch_page(
    db: &PgPool,
    resource: &Resource,
    query: &ListQuery,
) -> anyhow::Result<Page> {
    let mut sql = Sql {
        text: String::new(),
        binds: Vec::new(),
    };
    let conds = conditions(resource, query, &mut sql);
    let filtered_where = if conds.is_empty() {
        String::new()
    } else {
        format!("where {}", conds.join(" and "))
    };
    let count_sql = format!("select count(*) from {} {filtered_where}", resource.from);
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
    for b in &sql.binds {
        count = count.bind(b);
    }
    let total = count.fetch_one(db).await?;

    let (sort_expr, sort_ty) = resource.columns[query.sort]
        .sort
        .unwrap_or((resource.id, "text"));
    let mut conds = conds;
    if let Some((value, id)) = &query.after {
        let v = sql.bind(value.clone());
        let i = sql.bind(id.clone());
        let op = if query.desc { "<" } else { ">" };
        conds.push(format!(
            "(({sort_expr}), ({})) {op} ({v}::{sort_ty}, {i})",
            resource.id
        ));
    }
    let dir = if query.desc { "desc" } else { "asc" };
    sql.text = format!(
        "select ({id})::text, ({sort_expr})::text, {cols} from {from} {where_} \
         order by ({sort_expr}) {dir}, ({id}) {dir} limit {limit}",
        id = resource.id,
        cols = select_list(resource),
        from = resource.from,
        where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("where {}", conds.join(" and "))
        },
        limit = PAGE_SIZE + 1,
    );
    let mut q = sqlx::query(&sql.text);
    for b in &sql.binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(db).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut next = None;
    for (n, row) in rows.iter().enumerate() {
        let id: String = row.try_get(0)?;
        let sort_value: String = row.try_get::<Option<String>, _>(1)?.unwrap_or_default();
        if n as i64 == PAGE_SIZE {
            break;
        }
        let cells = (0..resource.columns.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i + 2)
                    .map(Option::unwrap_or_default)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if n as i64 == PAGE_SIZE - 1 && rows.len() as i64 > PAGE_SIZE {
            next = Some(format!("{sort_value}|{id}"));
        }
        out.push((id, cells));
    }
    Ok(Page {
        rows: out,
        total,
        next,
    })
}

/// The filtered list as CSV (a header row, then every matching row in the list's
/// order), streamed from the database as it is read: memory stays flat however long
/// the list. Cells that a spreadsheet would run as a formula are neutralised (OWASP
/// CSV Injection).
pub fn csv_response(db: PgPool, resource: &'static Resource, query: ListQuery) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if let Err(e) = stream_csv(&db, resource, &query, &tx).await {
            tracing::error!(error = %e, resource = resource.slug, "CSV export failed");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"billfold-{}.csv\"", resource.slug),
            ),
        ],
        body,
    )
        .into_response()
}

async fn stream_csv(
    db: &PgPool,
    resource: &Resource,
    query: &ListQuery,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;

    let mut sql = Sql {
        text: String::new(),
        binds: Vec::new(),
    };
    let conds = conditions(resource, query, &mut sql);
    let (sort_expr, _) = resource.columns[query.sort]
        .sort
        .unwrap_or((resource.id, "text"));
    let dir = if query.desc { "desc" } else { "asc" };
    sql.text = format!(
        "select {cols} from {from} {where_} order by ({sort_expr}) {dir}, ({id}) {dir}",
        cols = select_list(resource),
        from = resource.from,
        where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("where {}", conds.join(" and "))
        },
        id = resource.id,
    );
    let header: Vec<&str> = resource.columns.iter().map(|c| c.label).collect();
    let mut buffer = csv_line(&header)?;
    let mut q = sqlx::query(&sql.text);
    for b in &sql.binds {
        q = q.bind(b);
    }
    let mut rows = q.fetch(db);
    while let Some(row) = rows.try_next().await? {
        let cells = (0..resource.columns.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i)
                    .map(|c| neutralise(&c.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        buffer.extend(csv_line(&cells)?);
        if buffer.len() >= 32 * 1024
            && tx
                .send(Ok(Bytes::from(std::mem::take(&mut buffer))))
                .await
                .is_err()
        {
            return Ok(());
        }
    }
    if !buffer.is_empty() {
        let _ = tx.send(Ok(Bytes::from(buffer))).await;
    }
    Ok(())
}

fn csv_line<S: AsRef<[u8]>>(cells: &[S]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(cells)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Prefixes `'` to a cell a spreadsheet would read as a formula.
pub fn neutralise(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err() {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Resource = Resource {
        slug: "things",
        title: "Things",
        singular: "thing",
        from: "things t",
        id: "t.id::text",
        columns: &[
            Column {
                key: "name",
                label: "Name",
                expr: "t.name",
                sort: Some(("t.name", "text")),
                kind: Kind::Text,
            },
            Column {
                key: "created",
                label: "Created",
                expr: "t.created_at",
                sort: Some(("t.created_at", "timestamptz")),
                kind: Kind::Text,
            },
        ],
        search: &["t.name"],
        search_hint: "Name",
        filters: &[Filter {
            key: "status",
            label: "Status",
            expr: "t.status",
            kind: FilterKind::Choice(&[("on", "On"), ("off", "Off")]),
        }],
        default_sort: ("created", true),
        bulk: &[],
    };

    fn pairs(raw: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(raw).unwrap()
    }

    #[test]
    fn unknown_sorts_and_choices_fall_back_and_values_stay_parameters() {
        let q = ListQuery::parse(&R, &pairs("sort=evil;drop&f.status=maybe&q=50%25_off"));
        assert_eq!(q.sort, 1);
        assert!(q.desc);
        assert_eq!(q.filters, [""]);
        let mut sql = Sql {
            text: String::new(),
            binds: Vec::new(),
        };
        let conds = conditions(&R, &q, &mut sql);
        assert_eq!(conds, ["((t.name) ilike $1)"]);
        assert_eq!(sql.binds, ["%50\\%\\_off%"]);
    }

    #[test]
    fn cursors_must_read_as_their_column_type() {
        assert!(cursor_fits("2026-12-08 01:07:12.123456+00", "timestamptz"));
        assert!(cursor_fits("2026-12-08 01:07:12+05:30", "timestamptz"));
        assert!(!cursor_fits("2026-13-08 01:07:12+00", "timestamptz"));
        assert!(!cursor_fits("abc", "timestamptz"));
        assert!(cursor_fits("-42", "bigint"));
        assert!(!cursor_fits("4.2", "bigint"));
        let q = ListQuery::parse(&R, &pairs("after=abc%7Cx"));
        assert!(q.after.is_none(), "a malformed cursor starts over");
    }

    #[test]
    fn formulas_are_neutralised_numbers_are_not() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("-42"), "-42");
        assert_eq!(neutralise("@cmd"), "'@cmd");
        assert_eq!(neutralise("plain"), "plain");
    }
}
