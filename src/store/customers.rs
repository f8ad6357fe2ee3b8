//! Customers and their phones, and caller-ID matching: the exact E.164 number first, then the
//! national significant number (which ignores trunk and international prefixes). Numbers are
//! normalized when stored, never at lookup time.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::columns::Columns;
use super::{now_ms, Backend, Store, StoreError};
use crate::phone::{normalize, NormalizedPhone, NumberPlan};

/// Customer tier; VIP callers go first in queues.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Vip,
    Key,
    Regular,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Vip => "vip",
            Tier::Key => "key",
            Tier::Regular => "regular",
        }
    }
    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vip" => Some(Tier::Vip),
            "key" => Some(Tier::Key),
            "regular" | "" => Some(Tier::Regular),
            _ => None,
        }
    }
}

/// How a customer record came to exist.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CreatedVia {
    Manual,
    Call,
    Import,
    Api,
}

impl CreatedVia {
    pub fn as_str(self) -> &'static str {
        match self {
            CreatedVia::Manual => "manual",
            CreatedVia::Call => "call",
            CreatedVia::Import => "import",
            CreatedVia::Api => "api",
        }
    }
    fn parse(s: &str) -> CreatedVia {
        match s {
            "call" => CreatedVia::Call,
            "import" => CreatedVia::Import,
            "api" => CreatedVia::Api,
            _ => CreatedVia::Manual,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NewPhone {
    pub number: String,
    #[serde(default)]
    pub label: Option<String>,
}

/// A customer to create.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct NewCustomer {
    #[serde(default)]
    pub code: Option<String>,
    pub name: String,
    #[serde(default)]
    pub company: Option<String>,
    #[serde(default = "regular")]
    pub tier: Tier,
    #[serde(default)]
    pub birthday: Option<String>,
    #[serde(default)]
    pub anniversary: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub assigned_agent_id: Option<i64>,
    #[serde(default)]
    pub phones: Vec<NewPhone>,
    /// The customer asked not to get SMS / voice campaigns.
    #[serde(default)]
    pub opt_out_sms: bool,
    #[serde(default)]
    pub opt_out_voice: bool,
    /// The calendar `birthday` is kept in: a lunar (农历) birthday is greeted on that lunar
    /// month and day each year.
    #[serde(default)]
    pub birthday_calendar: BirthdayCalendar,
    /// Free labels campaigns select by ("wholesale", "beijing-fair-2026").
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Which calendar a birthday is in.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BirthdayCalendar {
    #[default]
    Gregorian,
    Lunar,
}

impl BirthdayCalendar {
    pub fn as_str(self) -> &'static str {
        match self {
            BirthdayCalendar::Gregorian => "gregorian",
            BirthdayCalendar::Lunar => "lunar",
        }
    }
}

/// Changes to a customer; `None` leaves a field alone, `phones` replaces all of them.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    pub name: Option<String>,
    pub company: Option<String>,
    pub tier: Option<Tier>,
    pub birthday: Option<String>,
    pub anniversary: Option<String>,
    pub address: Option<String>,
    pub notes: Option<String>,
    /// An agent id, or 0 to unassign.
    pub assigned_agent_id: Option<i64>,
    pub opt_out_sms: Option<bool>,
    pub opt_out_voice: Option<bool>,
    pub birthday_calendar: Option<BirthdayCalendar>,
    /// Replaces all of them.
    pub tags: Option<Vec<String>>,
    pub phones: Option<Vec<NewPhone>>,
}

fn regular() -> Tier {
    Tier::Regular
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Phone {
    pub number: String,
    pub e164: Option<String>,
    pub national: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Customer {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub company: Option<String>,
    pub tier: Tier,
    pub birthday: Option<String>,
    pub anniversary: Option<String>,
    pub address: Option<String>,
    pub notes: Option<String>,
    pub assigned_agent_id: Option<i64>,
    pub opt_out_sms: bool,
    pub opt_out_voice: bool,
    pub created_via: CreatedVia,
    pub created_at: i64,
    pub birthday_calendar: BirthdayCalendar,
    pub tags: Vec<String>,
    pub phones: Vec<Phone>,
}

/// The outcome of matching a caller's number.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallerMatch {
    /// The best guess: the only match, or among several the one contacted most recently
    /// (`None` when several match and none was ever contacted).
    pub customer: Option<Customer>,
    /// Every customer on that number.
    pub candidates: Vec<Customer>,
}

/// YYYY-MM-DD, as stored for birthdays and anniversaries.
fn check_date(field: &'static str, v: &Option<String>) -> Result<(), StoreError> {
    if let Some(d) = v {
        let ok = d.len() == 10
            && d.as_bytes()[4] == b'-'
            && d.as_bytes()[7] == b'-'
            && d[..4].parse::<u16>().is_ok()
            && d[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
            && d[8..].parse::<u8>().is_ok_and(|m| (1..=31).contains(&m));
        if !ok {
            return Err(StoreError::Invalid {
                field,
                why: format!("{d:?} is not a YYYY-MM-DD date"),
            });
        }
    }
    Ok(())
}

pub(super) const CUSTOMER_COLUMNS: &str = "id, code, name, company, tier, birthday, anniversary, address, \
     notes, assigned_agent_id, opt_out_sms, opt_out_voice, created_via, created_at, birthday_calendar";

/// A candidate's last contact, which picks the best guess among several on one number.
pub(super) const CANDIDATE_LAST_CONTACT: &str =
    "(SELECT MAX(offered_at) FROM calls WHERE calls.customer_id = customers.id) AS last_contact";

pub(super) fn customer_of(row: &impl Columns) -> Result<Customer, sqlx::Error> {
    let tier: String = row.col("tier")?;
    let via: String = row.col("created_via")?;
    Ok(Customer {
        id: row.col("id")?,
        code: row.col("code")?,
        name: row.col("name")?,
        company: row.col("company")?,
        tier: Tier::parse(&tier).unwrap_or(Tier::Regular),
        birthday: row.col("birthday")?,
        anniversary: row.col("anniversary")?,
        address: row.col("address")?,
        notes: row.col("notes")?,
        assigned_agent_id: row.col("assigned_agent_id")?,
        opt_out_sms: row.col::<i64>("opt_out_sms")? != 0,
        opt_out_voice: row.col::<i64>("opt_out_voice")? != 0,
        created_via: CreatedVia::parse(&via),
        created_at: row.col("created_at")?,
        birthday_calendar: if row.col::<String>("birthday_calendar")? == "lunar" {
            BirthdayCalendar::Lunar
        } else {
            BirthdayCalendar::Gregorian
        },
        tags: Vec::new(),
        phones: Vec::new(),
    })
}

/// A `customer_phones` row.
pub(super) fn phone_of(r: &impl Columns) -> Result<Phone, sqlx::Error> {
    Ok(Phone {
        number: r.col("raw")?,
        e164: r.col("e164")?,
        national: r.col("national")?,
        label: r.col("label")?,
    })
}

impl Store {
    /// Creates a customer and its phones in one transaction. Every phone must contain digits;
    /// a missing code gets `C<id>`.
    pub async fn create_customer(
        &self,
        c: &NewCustomer,
        via: CreatedVia,
        plan: impl Into<NumberPlan>,
    ) -> Result<Customer, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = insert_customer(&mut tx, c, via, plan.into()).await?;
        tx.commit().await?;
        self.customer(id)
            .await?
            .ok_or(StoreError::NotFound("customer"))
    }

    /// Creates the customer of an unknown caller unless one with the caller's number exists by
    /// now: `(customer, true)` when made here, `(existing, false)` when another call from the
    /// same number made it first. Two calls from one new number at once (a redial, two lines
    /// of one PBX, several screenpop nodes on one database) would otherwise each create a
    /// customer, and every later call would pop two candidates. On PostgreSQL the check and
    /// the insert hold a transaction-scoped advisory lock on the number, so they are one step
    /// for every node; on SQLite the one writing connection makes them one.
    pub async fn create_customer_for_caller(
        &self,
        c: &NewCustomer,
        n: &NormalizedPhone,
        plan: impl Into<NumberPlan>,
    ) -> Result<(Customer, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // 'sPcc' (screenpop caller customer) keeps the key apart from other advisory locks.
            sqlx::query("SELECT pg_advisory_xact_lock(1934648163, hashtext($1))")
                .bind(n.e164.clone().unwrap_or_else(|| n.national.clone()))
                .execute(&mut *tx)
                .await?;
        }
        // The same candidates as the card's match: by E.164, or by national digits.
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_phones \
             WHERE e164 = $1 OR (national = $2 AND $2 <> '') ORDER BY customer_id LIMIT 1",
        )
        .bind(n.e164.clone())
        .bind(n.national.clone())
        .fetch_optional(&mut *tx)
        .await?;
        let (id, created) = match existing {
            Some(id) => (id, false),
            None => (
                insert_customer(&mut tx, c, CreatedVia::Call, plan.into()).await?,
                true,
            ),
        };
        tx.commit().await?;
        let customer = self
            .customer(id)
            .await?
            .ok_or(StoreError::NotFound("customer"))?;
        Ok((customer, created))
    }

    pub async fn customer(&self, id: i64) -> Result<Option<Customer>, StoreError> {
        // Built from constants only.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut c = [customer_of(&row)?];
        self.fill_phones_and_tags(&mut c).await?;
        let [c] = c;
        Ok(Some(c))
    }

    /// Finds the customers on a caller's number: by E.164 when it has one and it matches,
    /// otherwise by national significant number.
    pub async fn match_caller(&self, n: &NormalizedPhone) -> Result<CallerMatch, StoreError> {
        let (m, _) = self.match_caller_then(n, |_| async {}).await?;
        Ok(m)
    }

    /// [`Store::match_caller`], and `also` run on the best guess beside the reading of the
    /// candidates' phones and tags: the screen-pop reads the customer's history there, one
    /// database round trip after the match instead of two (it showed in the pop's tail on
    /// PostgreSQL). `None` when no single customer is the best guess.
    pub async fn match_caller_then<F, Fut, T>(
        &self,
        n: &NormalizedPhone,
        also: F,
    ) -> Result<(CallerMatch, Option<T>), StoreError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let select = |key: &str| {
            format!(
                "SELECT {CUSTOMER_COLUMNS}, {CANDIDATE_LAST_CONTACT} \
                 FROM customers WHERE id IN \
                 (SELECT customer_id FROM customer_phones WHERE {key} = $1) \
                 ORDER BY id"
            )
        };
        let mut rows = Vec::new();
        if let Some(e164) = &n.e164 {
            rows = sqlx::query(AssertSqlSafe(select("e164")))
                .bind(e164.clone())
                .fetch_all(self.reader())
                .await?;
        }
        if rows.is_empty() && !n.national.is_empty() {
            rows = sqlx::query(AssertSqlSafe(select("national")))
                .bind(n.national.clone())
                .fetch_all(self.reader())
                .await?;
        }
        let mut candidates = Vec::with_capacity(rows.len());
        let mut latest: Option<(i64, usize)> = None;
        for (i, row) in rows.iter().enumerate() {
            let last: Option<i64> = row.try_get("last_contact")?;
            if let Some(t) = last {
                if latest.is_none_or(|(best, _)| t > best) {
                    latest = Some((t, i));
                }
            }
            candidates.push(customer_of(row)?);
        }
        let best = match candidates.len() {
            1 => Some(0),
            _ => latest.map(|(_, i)| i),
        };
        let ids: Vec<i64> = candidates.iter().map(|c| c.id).collect();
        let also = async {
            match best.and_then(|i| ids.get(i)) {
                Some(&id) => Some(also(id).await),
                None => None,
            }
        };
        let ((), extra) =
            futures_util::future::try_join(self.fill_phones_and_tags(&mut candidates), async {
                Ok(also.await)
            })
            .await?;
        Ok((
            CallerMatch {
                customer: best.and_then(|i| candidates.get(i).cloned()),
                candidates,
            },
            extra,
        ))
    }

    /// Reads the phones and tags of several customers: two queries side by side, not two per
    /// customer one after the other.
    async fn fill_phones_and_tags(&self, customers: &mut [Customer]) -> Result<(), StoreError> {
        let ids: Vec<i64> = customers.iter().map(|c| c.id).collect();
        let (mut phones, mut tags) =
            futures_util::future::try_join(self.phones_of_all(&ids), self.tags_of_all(&ids))
                .await?;
        for c in customers {
            c.phones = phones.remove(&c.id).unwrap_or_default();
            c.tags = tags.remove(&c.id).unwrap_or_default();
        }
        Ok(())
    }

    /// The phones of several customers in one query, each customer's in the order
    /// [`Store::customer`] gives them.
    async fn phones_of_all(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<Phone>>, StoreError> {
        let mut out = std::collections::HashMap::new();
        let select = "SELECT customer_id, raw, e164, national, label FROM customer_phones";
        for r in self.of_customers(select, "id", ids).await? {
            let id: i64 = r.try_get("customer_id")?;
            out.entry(id).or_insert_with(Vec::new).push(phone_of(&r)?);
        }
        Ok(out)
    }

    /// The tags of several customers in one query, each customer's sorted.
    async fn tags_of_all(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<String>>, StoreError> {
        let mut out = std::collections::HashMap::new();
        let select = "SELECT customer_id, tag FROM customer_tags";
        for r in self.of_customers(select, "tag", ids).await? {
            let id: i64 = r.try_get("customer_id")?;
            out.entry(id)
                .or_insert_with(Vec::new)
                .push(r.try_get("tag")?);
        }
        Ok(out)
    }

    /// `select` (a table with a `customer_id`) for these customers in one query, by customer
    /// and then `order`. `select` and `order` are constants.
    async fn of_customers(
        &self,
        select: &str,
        order: &str,
        ids: &[i64],
    ) -> Result<Vec<AnyRow>, StoreError> {
        // In chunks: a number many customers share must not pass a database's limit on
        // parameters (SQLite's is 32,766), and few statements of different lengths are cached.
        let mut rows = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "{select} WHERE customer_id IN ({}) ORDER BY customer_id, {order}",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            rows.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(rows)
    }
}

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Maps a unique-constraint failure to a field error.
fn unique_violation(e: sqlx::Error, field: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Invalid {
            field,
            why: "already in use".into(),
        },
        _ => StoreError::Db(e),
    }
}

/// Filters for listing customers; newest id first below `before`.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Part of the name, any case.
    pub name: Option<String>,
    /// A phone number in any format (normalized like stored numbers).
    pub phone: Option<NormalizedPhone>,
    pub code: Option<String>,
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn customers(&self, f: &CustomerFilter) -> Result<Vec<Customer>, StoreError> {
        let mut sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE 1 = 1");
        let mut n = 0;
        let mut cond = |sql: &mut String, c: &str| {
            n += 1;
            sql.push_str(&c.replace('?', &format!("${n}")));
        };
        if f.name.is_some() {
            cond(&mut sql, " AND LOWER(name) LIKE ?");
        }
        if let Some(p) = &f.phone {
            if p.e164.is_some() {
                cond(
                    &mut sql,
                    " AND id IN (SELECT customer_id FROM customer_phones WHERE e164 = ?)",
                );
            } else {
                cond(
                    &mut sql,
                    " AND id IN (SELECT customer_id FROM customer_phones WHERE national = ?)",
                );
            }
        }
        if f.code.is_some() {
            cond(&mut sql, " AND code = ?");
        }
        if f.before.is_some() {
            cond(&mut sql, " AND id < ?");
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            f.limit.clamp(1, 1000)
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(name) = &f.name {
            let escaped = name.to_lowercase().replace(['%', '_'], "");
            q = q.bind(format!("%{escaped}%"));
        }
        if let Some(p) = &f.phone {
            q = q.bind(p.e164.clone().unwrap_or_else(|| p.national.clone()));
        }
        if let Some(c) = &f.code {
            q = q.bind(c.clone());
        }
        if let Some(b) = f.before {
            q = q.bind(b);
        }
        let rows = q.fetch_all(self.reader()).await?;
        let mut out = rows
            .iter()
            .map(customer_of)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_phones_and_tags(&mut out).await?;
        Ok(out)
    }
}

/// Inserts a customer and its phones inside `tx`; returns its id. Every phone must contain
/// digits; a missing code gets `C<id>`.
pub(crate) async fn insert_customer(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &NewCustomer,
    via: CreatedVia,
    plan: NumberPlan,
) -> Result<i64, StoreError> {
    let phones = validate_customer(c, plan)?;
    let now = now_ms();
    // A unique placeholder code until the id is known.
    let temp_code = format!("tmp-{:016x}", rand::random::<u64>());
    let row = sqlx::query(
        "INSERT INTO customers (code, name, company, tier, birthday, anniversary, address, \
         notes, assigned_agent_id, created_via, created_at, updated_at, opt_out_sms, \
         opt_out_voice, birthday_calendar) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
    )
    .bind(c.code.clone().unwrap_or(temp_code))
    .bind(c.name.trim().to_string())
    .bind(c.company.clone())
    .bind(c.tier.as_str())
    .bind(c.birthday.clone())
    .bind(c.anniversary.clone())
    .bind(c.address.clone())
    .bind(c.notes.clone())
    .bind(c.assigned_agent_id)
    .bind(via.as_str())
    .bind(now)
    .bind(now)
    .bind(i64::from(c.opt_out_sms))
    .bind(i64::from(c.opt_out_voice))
    .bind(c.birthday_calendar.as_str())
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => no_such_agent(),
        _ => unique_violation(e, "code"),
    })?;
    let id: i64 = row.try_get("id")?;
    if c.code.is_none() {
        sqlx::query("UPDATE customers SET code = $1 WHERE id = $2")
            .bind(format!("C{id:06}"))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    insert_phones(tx, id, &phones).await?;
    insert_tags(tx, id, &c.tags).await?;
    Ok(id)
}

/// Stores a customer's tags (trimmed, empty ones and repeats dropped).
async fn insert_tags(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    customer: i64,
    tags: &[String],
) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for t in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if t.chars().count() > 64 {
            return Err(StoreError::Invalid {
                field: "tags",
                why: format!("{t:?} is longer than 64 characters"),
            });
        }
        if seen.insert(t) {
            sqlx::query("INSERT INTO customer_tags (customer_id, tag) VALUES ($1, $2)")
                .bind(customer)
                .bind(t.to_string())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Stores a customer's phones, normalized by [`validate_customer`].
async fn insert_phones(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    customer: i64,
    phones: &[(&NewPhone, NormalizedPhone)],
) -> Result<(), StoreError> {
    for (p, n) in phones {
        sqlx::query(
            "INSERT INTO customer_phones (customer_id, raw, e164, national, label) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(customer)
        .bind(p.number.clone())
        .bind(n.e164.clone())
        .bind(n.national.clone())
        .bind(p.label.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An `assigned_agent_id` that names no agent.
fn no_such_agent() -> StoreError {
    StoreError::Invalid {
        field: "assigned_agent_id",
        why: "no such agent".into(),
    }
}

/// Checks a new customer without touching the database; returns its phones normalized.
pub(crate) fn validate_customer(
    c: &NewCustomer,
    plan: NumberPlan,
) -> Result<Vec<(&NewPhone, NormalizedPhone)>, StoreError> {
    if c.name.trim().is_empty() {
        return Err(StoreError::Invalid {
            field: "name",
            why: "must not be empty".into(),
        });
    }
    check_date("birthday", &c.birthday)?;
    check_date("anniversary", &c.anniversary)?;
    let mut phones = Vec::with_capacity(c.phones.len());
    for (i, p) in c.phones.iter().enumerate() {
        let n = normalize(&p.number, plan).map_err(|e| StoreError::Invalid {
            field: "phones",
            why: format!("phones[{i}]: {e}"),
        })?;
        phones.push((p, n));
    }
    Ok(phones)
}

impl Store {
    /// Which of these customer codes are taken already.
    pub async fn existing_codes(&self, codes: &[String]) -> Result<Vec<String>, StoreError> {
        let mut taken = Vec::new();
        for chunk in codes.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT code FROM customers WHERE code IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q.bind(c.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                taken.push(r.try_get("code")?);
            }
        }
        Ok(taken)
    }

    /// Every customer with phones, in id order, `limit` at a time after `after` (for export).
    pub async fn customers_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Customer>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id > $1 ORDER BY id LIMIT {}",
            limit.clamp(1, 10_000)
        )))
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(customer_of)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_phones_and_tags(&mut out).await?;
        Ok(out)
    }
}

impl Store {
    /// Applies a change to a customer in one transaction (phones replaced when given).
    pub async fn update_customer(
        &self,
        id: i64,
        p: &CustomerPatch,
        plan: impl Into<NumberPlan>,
    ) -> Result<Customer, StoreError> {
        let plan = plan.into();
        let mut cur = self
            .customer(id)
            .await?
            .ok_or(StoreError::NotFound("customer"))?;
        if let Some(n) = &p.name {
            cur.name = n.trim().to_string();
        }
        let keep = |v: &Option<String>, old: &mut Option<String>| {
            if let Some(v) = v {
                *old = (!v.trim().is_empty()).then(|| v.trim().to_string());
            }
        };
        keep(&p.company, &mut cur.company);
        keep(&p.birthday, &mut cur.birthday);
        keep(&p.anniversary, &mut cur.anniversary);
        keep(&p.address, &mut cur.address);
        keep(&p.notes, &mut cur.notes);
        if let Some(t) = p.tier {
            cur.tier = t;
        }
        if let Some(a) = p.assigned_agent_id {
            cur.assigned_agent_id = (a != 0).then_some(a);
        }
        if let Some(v) = p.opt_out_sms {
            cur.opt_out_sms = v;
        }
        if let Some(v) = p.opt_out_voice {
            cur.opt_out_voice = v;
        }
        if let Some(v) = p.birthday_calendar {
            cur.birthday_calendar = v;
        }
        // The same checks as a new customer, on the result.
        let check = NewCustomer {
            code: Some(cur.code.clone()),
            name: cur.name.clone(),
            company: None,
            tier: cur.tier,
            birthday: cur.birthday.clone(),
            anniversary: cur.anniversary.clone(),
            address: None,
            notes: None,
            assigned_agent_id: None,
            phones: p.phones.clone().unwrap_or_default(),
            opt_out_sms: false,
            opt_out_voice: false,
            birthday_calendar: cur.birthday_calendar,
            tags: Vec::new(),
        };
        let phones = validate_customer(&check, plan)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE customers SET name = $1, company = $2, tier = $3, birthday = $4, \
             anniversary = $5, address = $6, notes = $7, assigned_agent_id = $8, \
             opt_out_sms = $9, opt_out_voice = $10, updated_at = $11, birthday_calendar = $13 \
             WHERE id = $12",
        )
        .bind(cur.name.clone())
        .bind(cur.company.clone())
        .bind(cur.tier.as_str())
        .bind(cur.birthday.clone())
        .bind(cur.anniversary.clone())
        .bind(cur.address.clone())
        .bind(cur.notes.clone())
        .bind(cur.assigned_agent_id)
        .bind(i64::from(cur.opt_out_sms))
        .bind(i64::from(cur.opt_out_voice))
        .bind(now_ms())
        .bind(id)
        .bind(cur.birthday_calendar.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => no_such_agent(),
            _ => StoreError::Db(e),
        })?;
        if p.phones.is_some() {
            sqlx::query("DELETE FROM customer_phones WHERE customer_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_phones(&mut tx, id, &phones).await?;
        }
        if let Some(tags) = &p.tags {
            sqlx::query("DELETE FROM customer_tags WHERE customer_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_tags(&mut tx, id, tags).await?;
        }
        tx.commit().await?;
        self.customer(id)
            .await?
            .ok_or(StoreError::NotFound("customer"))
    }
}
