//! Planning a run over the store: the audience's customers page by page through
//! [`plan::plan`], either shown (the preview, `screenpop campaign preview`) or recorded as
//! attempts (a run). Both go through [`walk`], so the preview shows exactly what a run sends.

use jiff::civil::Date;

use super::plan::{self, Planned, Via};
use super::spec::Checked;
use crate::store::campaigns::NewAttempt;
use crate::store::{Store, StoreError};

/// Customers read per query.
const PAGE: i64 = 2_000;

/// One line of a preview.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PreviewItem {
    pub customer_id: i64,
    pub name: String,
    /// The number it goes to (E.164), if any.
    pub number: Option<String>,
    /// `sms` or `voice`; null when skipped.
    pub channel: Option<Via>,
    /// The SMS text this customer gets.
    pub text: Option<String>,
    pub parts: usize,
    /// Why the customer is selected but not contacted.
    pub skipped: Option<String>,
}

/// What a run would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The local day whose occasions it greets.
    pub day: String,
    pub occasion: String,
    /// Customers to contact, by SMS and by voice.
    pub sms: u64,
    pub voice: u64,
    /// SMS parts in all.
    pub sms_parts: u64,
    pub skipped: u64,
    /// The first `limit` customers.
    pub items: Vec<PreviewItem>,
    /// More customers than `items` shows.
    pub truncated: bool,
}

/// Walks the audience for `day`, handing each planned customer to `each` with their name.
async fn walk(
    store: &Store,
    c: &Checked,
    campaign_id: i64,
    day: Date,
    mut each: impl FnMut(Planned, &str),
) -> Result<(), StoreError> {
    let before = c.last_contact_before_ms();
    let mut after = 0;
    loop {
        let page = store
            .campaign_candidates(&c.spec.audience, before, after, PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.customer_id;
        for cand in &page {
            if let Some(p) = plan::plan(c, campaign_id, cand, day) {
                each(p, &cand.name);
            }
        }
        if (page.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

/// What a run for `day` would send, without sending or recording anything.
pub async fn preview(
    store: &Store,
    c: &Checked,
    campaign_id: i64,
    day: Date,
    limit: usize,
) -> Result<Preview, StoreError> {
    let mut p = Preview {
        day: day.to_string(),
        occasion: plan::occasion(c.spec.kind, campaign_id, day),
        ..Preview::default()
    };
    walk(store, c, campaign_id, day, |planned, name| {
        let item = match planned {
            Planned::Send {
                customer_id,
                number,
                via,
                body,
                parts,
                ..
            } => {
                match via {
                    Via::Sms => {
                        p.sms += 1;
                        p.sms_parts += parts as u64;
                    }
                    Via::Voice => p.voice += 1,
                }
                PreviewItem {
                    customer_id,
                    name: name.to_string(),
                    number: Some(number),
                    channel: Some(via),
                    text: (via == Via::Sms).then_some(body),
                    parts,
                    skipped: None,
                }
            }
            Planned::Skip {
                customer_id,
                reason,
            } => {
                p.skipped += 1;
                PreviewItem {
                    customer_id,
                    name: name.to_string(),
                    number: None,
                    channel: None,
                    text: None,
                    parts: 0,
                    skipped: Some(reason),
                }
            }
        };
        if p.items.len() < limit {
            p.items.push(item);
        } else {
            p.truncated = true;
        }
    })
    .await?;
    Ok(p)
}

/// Records the run for `day` as attempts (each customer once per occasion, whatever ran
/// before); returns how many are new.
pub async fn record(
    store: &Store,
    c: &Checked,
    campaign_id: i64,
    day: Date,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let occasion = plan::occasion(c.spec.kind, campaign_id, day);
    // A greeting is for its day: what quiet hours, retries or a pause hold back past the
    // end of that local day is not sent late.
    let expires_at_ms = match c.spec.kind {
        super::spec::Kind::Broadcast => None,
        _ => day
            .tomorrow()
            .ok()
            .and_then(|t| {
                t.to_datetime(jiff::civil::Time::midnight())
                    .to_zoned_datetime(c.schedule.time_zone().clone())
                    .ok()
            })
            .map(|z| z.timestamp().as_millisecond()),
    };
    let mut batch = Vec::new();
    walk(store, c, campaign_id, day, |planned, _| {
        batch.push(match planned {
            Planned::Send {
                customer_id,
                occasion,
                number,
                via,
                body,
                ..
            } => NewAttempt {
                customer_id,
                occasion,
                expires_at: expires_at_ms,
                number,
                via,
                body,
                skipped: None,
            },
            Planned::Skip {
                customer_id,
                reason,
            } => NewAttempt {
                customer_id,
                // Not the greeting's occasion: a customer this campaign cannot reach may still
                // be greeted by another campaign of the kind (voice, after an SMS opt-out).
                occasion: format!("{occasion}:skipped:{campaign_id}"),
                expires_at: None,
                number: String::new(),
                via: Via::Sms,
                body: String::new(),
                skipped: Some(reason),
            },
        })
    })
    .await?;
    store.insert_attempts(campaign_id, &batch, now_ms).await
}

/// Saves a campaign as a draft after its check (the API and the CLI both save through here,
/// so both refuse the same things, by field).
pub async fn save(
    store: &Store,
    spec: super::spec::CampaignSpec,
    base: &std::path::Path,
    created_by: &str,
) -> Result<crate::store::campaigns::CampaignRow, StoreError> {
    let c = spec
        .check(jiff::Timestamp::now(), base)
        .map_err(|e| StoreError::Invalid {
            field: e.field,
            why: e.why,
        })?;
    let json = serde_json::to_string(&c.spec).map_err(|e| StoreError::Invalid {
        field: "spec",
        why: e.to_string(),
    })?;
    store
        .create_campaign(
            &c.spec.name,
            c.spec.kind.as_str(),
            c.spec.channel.as_str(),
            &json,
            created_by,
        )
        .await
}
