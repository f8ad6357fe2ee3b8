//! Customer CSV import and export.
//!
//! The file is UTF-8 (a byte-order mark is allowed) with a header row. Columns, any order, any
//! case: `name` (required), `code`, `company`, `tier` (vip/key/regular), `birthday`,
//! `anniversary` (YYYY-MM-DD), `address`, `notes`, `assigned_agent` (a username), and phones:
//! a `phones` column holding `label:number` or `number` entries separated by `;`, and/or any
//! column named `phone…`, `mobile…` or `tel…` (the column name becomes the label).
//!
//! Import is all or nothing: every row is checked first, and every rejected row is reported
//! with its line and reason; only a clean file is written, in one transaction.

use std::collections::{HashMap, HashSet};

use crate::phone::NumberPlan;
use crate::store::customers::{
    insert_customer, validate_customer, CreatedVia, NewCustomer, NewPhone, Tier,
};
use crate::store::{Store, StoreError};

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// The line in the file (the header is line 1).
    pub line: u64,
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub imported: usize,
    pub rejected: Vec<Rejected>,
}

fn reject(line: u64, field: Option<&str>, reason: impl Into<String>) -> Rejected {
    Rejected {
        line,
        field: field.map(str::to_string),
        reason: reason.into(),
    }
}

/// Reads, checks and (when every row is good) imports customers.
pub async fn import(
    store: &Store,
    data: &[u8],
    plan: impl Into<NumberPlan>,
) -> Result<Report, StoreError> {
    let plan = plan.into();
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut report = Report::default();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|h| h.trim().to_lowercase()).collect(),
        Err(e) => {
            report
                .rejected
                .push(reject(1, None, format!("header: {e}")));
            return Ok(report);
        }
    };
    if !headers.iter().any(|h| h == "name") {
        report
            .rejected
            .push(reject(1, Some("name"), "the header has no name column"));
        return Ok(report);
    }
    let agents: HashMap<String, i64> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.username, a.id))
        .collect();
    let mut rows: Vec<(u64, NewCustomer)> = Vec::new();
    let mut codes_seen: HashSet<String> = HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                let why = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
                    _ => e.to_string(),
                };
                report.rejected.push(reject(line, None, why));
                continue;
            }
        };
        if rec.iter().all(str::is_empty) {
            continue; // blank line
        }
        match row_of(&headers, &rec, &agents) {
            Ok(c) => {
                if let Some(code) = &c.code {
                    if !codes_seen.insert(code.clone()) {
                        report.rejected.push(reject(
                            line,
                            Some("code"),
                            format!("code {code} appears twice in the file"),
                        ));
                        continue;
                    }
                }
                if let Err(e) = validate_customer(&c, plan) {
                    let (field, why) = match e {
                        StoreError::Invalid { field, why } => (Some(field), why),
                        other => (None, other.to_string()),
                    };
                    report.rejected.push(reject(line, field, why));
                    continue;
                }
                rows.push((line, c));
            }
            Err(r) => report.rejected.push(reject(line, Some(r.0), r.1)),
        }
    }
    let codes: Vec<String> = rows.iter().filter_map(|(_, c)| c.code.clone()).collect();
    let taken: HashSet<String> = store.existing_codes(&codes).await?.into_iter().collect();
    for (line, c) in &rows {
        if let Some(code) = c.code.as_ref().filter(|c| taken.contains(*c)) {
            report.rejected.push(reject(
                *line,
                Some("code"),
                format!("code {code} is already in use"),
            ));
        }
    }
    report.rejected.sort_by_key(|r| r.line);
    if !report.rejected.is_empty() {
        return Ok(report);
    }
    let mut tx = store.pool().begin().await?;
    for (line, c) in &rows {
        if let Err(e) = insert_customer(&mut tx, c, CreatedVia::Import, plan).await {
            tx.rollback().await?;
            let (field, why) = match e {
                StoreError::Invalid { field, why } => (Some(field), why),
                other => (None, other.to_string()),
            };
            report.rejected.push(reject(*line, field, why));
            return Ok(report);
        }
    }
    tx.commit().await?;
    report.imported = rows.len();
    Ok(report)
}

/// One record as a new customer, or the field and reason it is refused.
fn row_of(
    headers: &[String],
    rec: &csv::StringRecord,
    agents: &HashMap<String, i64>,
) -> Result<NewCustomer, (&'static str, String)> {
    let mut c = NewCustomer {
        code: None,
        name: String::new(),
        company: None,
        tier: Tier::Regular,
        birthday: None,
        anniversary: None,
        address: None,
        notes: None,
        assigned_agent_id: None,
        phones: Vec::new(),
        opt_out_sms: false,
        opt_out_voice: false,
        birthday_calendar: Default::default(),
        tags: Vec::new(),
    };
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    for (h, v) in headers.iter().zip(rec.iter()) {
        match h.as_str() {
            "name" => c.name = v.to_string(),
            "code" => c.code = opt(v),
            "company" => c.company = opt(v),
            "tier" => {
                c.tier =
                    Tier::parse(v).ok_or(("tier", format!("{v:?} is not vip, key or regular")))?
            }
            "birthday" => c.birthday = opt(v),
            "anniversary" => c.anniversary = opt(v),
            "address" => c.address = opt(v),
            "notes" => c.notes = opt(v),
            "assigned_agent" if !v.is_empty() => {
                c.assigned_agent_id = Some(
                    *agents
                        .get(v)
                        .ok_or(("assigned_agent", format!("no agent named {v:?}")))?,
                );
            }
            "phones" => {
                for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                    let (label, number) = match entry.split_once(':') {
                        Some((l, n)) if !l.chars().any(|ch| ch.is_ascii_digit()) => {
                            (Some(l.trim().to_string()), n.trim())
                        }
                        _ => (None, entry),
                    };
                    c.phones.push(NewPhone {
                        number: number.to_string(),
                        label,
                    });
                }
            }
            h if !v.is_empty()
                && (h.starts_with("phone") || h.starts_with("mobile") || h.starts_with("tel")) =>
            {
                c.phones.push(NewPhone {
                    number: v.to_string(),
                    label: Some(h.to_string()),
                });
            }
            _ => {}
        }
    }
    if c.name.trim().is_empty() {
        return Err(("name", "must not be empty".into()));
    }
    Ok(c)
}

/// Writes every customer as CSV (the import's columns; phones as `label:number;…`).
pub async fn export(store: &Store, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let agents: HashMap<i64, String> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.username))
        .collect();
    let mut w = csv::Writer::from_writer(out);
    let csv_err = |e: csv::Error| StoreError::Invalid {
        field: "export",
        why: e.to_string(),
    };
    w.write_record([
        "code",
        "name",
        "company",
        "tier",
        "birthday",
        "anniversary",
        "address",
        "notes",
        "assigned_agent",
        "phones",
        "created_via",
    ])
    .map_err(csv_err)?;
    let mut after = 0;
    loop {
        let batch = store.customers_after(after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.id;
        for c in &batch {
            let phones: Vec<String> = c
                .phones
                .iter()
                .map(|p| match &p.label {
                    Some(l) => format!("{l}:{}", p.number),
                    None => p.number.clone(),
                })
                .collect();
            let agent = c
                .assigned_agent_id
                .and_then(|a| agents.get(&a).cloned())
                .unwrap_or_default();
            let s = |v: &Option<String>| v.clone().unwrap_or_default();
            w.write_record([
                c.code.clone(),
                c.name.clone(),
                s(&c.company),
                c.tier.as_str().to_string(),
                s(&c.birthday),
                s(&c.anniversary),
                s(&c.address),
                s(&c.notes),
                agent,
                phones.join(";"),
                c.created_via.as_str().to_string(),
            ])
            .map_err(csv_err)?;
        }
    }
    w.flush().map_err(|e| StoreError::Invalid {
        field: "export",
        why: e.to_string(),
    })?;
    Ok(())
}
