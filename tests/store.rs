//! The store's tests, run the same on SQLite (a temp file) and on the PostgreSQL server of this
//! machine (`SCREENPOP_TEST_POSTGRES`, default postgres://postgres@127.0.0.1:5432/test), each PostgreSQL
//! run in a schema of its own. PostgreSQL being unreachable is a failure, not a skip.

use screenpop::crm::phone::{normalize, region};
use screenpop::store::customers::{CreatedVia, NewCustomer, NewPhone, Tier};
use screenpop::store::{Store, StoreError};

fn pg_url() -> String {
    std::env::var("SCREENPOP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

async fn sqlite_store(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("screenpop-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("screenpop.db").display());
    let store = Store::connect(&url).await.expect("sqlite store");
    store.migrate().await.expect("sqlite migrations");
    store
}

async fn postgres_store(tag: &str) -> Store {
    let schema = format!(
        "sp_{tag}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let admin = Store::connect(&pg_url()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {} is required for the store tests: {e}",
            pg_url()
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(admin.pool())
        .await
        .expect("create schema");
    let sep = if pg_url().contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20search_path%3D{schema}", pg_url());
    let store = Store::connect(&url).await.expect("postgres store");
    store.migrate().await.expect("postgres migrations");
    store
}

/// Runs a test body against both databases.
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let store = sqlite_store(stringify!($name)).await;
                ($body)(store).await;
            }
            #[tokio::test]
            async fn postgres() {
                let store = postgres_store(stringify!($name)).await;
                ($body)(store).await;
            }
        }
    };
}

fn customer(name: &str, tier: Tier, phones: &[&str]) -> NewCustomer {
    NewCustomer {
        code: None,
        name: name.to_string(),
        company: Some("ACME 有限公司".into()),
        tier,
        birthday: Some("1980-02-29".into()),
        anniversary: None,
        address: None,
        notes: None,
        assigned_agent_id: None,
        phones: phones
            .iter()
            .map(|n| NewPhone {
                number: n.to_string(),
                label: Some("mobile".into()),
            })
            .collect(),
    }
}

on_both!(migrations_are_idempotent, |store: Store| async move {
    store.migrate().await.expect("second run is a no-op");
});

on_both!(customers_round_trip, |store: Store| async move {
    let us = region("US").unwrap();
    let c = store
        .create_customer(
            &customer("张伟", Tier::Vip, &["+1 415 555 2671", "(212) 555-0100"]),
            CreatedVia::Api,
            us,
        )
        .await
        .unwrap();
    assert_eq!(c.name, "张伟");
    assert_eq!(c.company.as_deref(), Some("ACME 有限公司"));
    assert_eq!(c.tier, Tier::Vip);
    assert_eq!(c.code, format!("C{:06}", c.id));
    assert_eq!(c.created_via, CreatedVia::Api);
    assert_eq!(c.phones.len(), 2);
    assert_eq!(c.phones[0].e164.as_deref(), Some("+14155552671"));
    assert_eq!(c.phones[1].national, "2125550100");
    assert!(!c.opt_out_sms);
    let again = store.customer(c.id).await.unwrap().unwrap();
    assert_eq!(again, c);
    assert!(store.customer(c.id + 1000).await.unwrap().is_none());
});

on_both!(caller_matching, |store: Store| async move {
    let us = region("US").unwrap();
    let ann = store
        .create_customer(
            &customer("Ann", Tier::Regular, &["+1 415 555 2671"]),
            CreatedVia::Manual,
            us,
        )
        .await
        .unwrap();
    // A caller in national format, or with an international prefix, finds her.
    for raw in ["(415) 555-2671", "0014155552671", "+14155552671"] {
        let m = store
            .match_caller(&normalize(raw, us).unwrap())
            .await
            .unwrap();
        assert_eq!(m.customer.as_ref().map(|c| c.id), Some(ann.id), "{raw}");
        assert_eq!(m.candidates.len(), 1);
    }
    // A number stored without a parseable form still matches by its national digits.
    let odd = store
        .create_customer(
            &customer("Odd", Tier::Regular, &["0 123456"]),
            CreatedVia::Manual,
            us,
        )
        .await
        .unwrap();
    let m = store
        .match_caller(&normalize("123456", us).unwrap())
        .await
        .unwrap();
    assert_eq!(m.customer.map(|c| c.id), Some(odd.id));
    // Unknown number: nothing.
    let m = store
        .match_caller(&normalize("+1 303 555 0199", us).unwrap())
        .await
        .unwrap();
    assert!(m.customer.is_none() && m.candidates.is_empty());
    // Two customers on one number: no best guess until one of them has been contacted.
    let bob = store
        .create_customer(
            &customer("Bob", Tier::Key, &["415-555-2671"]),
            CreatedVia::Manual,
            us,
        )
        .await
        .unwrap();
    let n = normalize("4155552671", us).unwrap();
    let m = store.match_caller(&n).await.unwrap();
    assert_eq!(m.candidates.len(), 2);
    assert!(m.customer.is_none());
    sqlx::query(
        "INSERT INTO calls (sip_call_id, direction, caller_raw, caller_e164, dialed, customer_id, \
         offered_at, created_by) VALUES ($1, 'inbound', $2, $3, '100', $4, $5, 'test')",
    )
    .bind("call-1")
    .bind("4155552671")
    .bind("+14155552671")
    .bind(bob.id)
    .bind(1_700_000_000_000i64)
    .execute(store.pool())
    .await
    .unwrap();
    let m = store.match_caller(&n).await.unwrap();
    assert_eq!(
        m.customer.map(|c| c.id),
        Some(bob.id),
        "the one contacted most recently"
    );
});

on_both!(invalid_input_names_the_field, |store: Store| async move {
    let us = region("US").unwrap();
    let field = |e: StoreError| match e {
        StoreError::Invalid { field, .. } => field,
        other => panic!("expected a field error, got {other}"),
    };
    let mut c = customer("  ", Tier::Regular, &[]);
    assert_eq!(
        field(
            store
                .create_customer(&c, CreatedVia::Api, us)
                .await
                .unwrap_err()
        ),
        "name"
    );
    c.name = "X".into();
    c.birthday = Some("1980-13-01".into());
    assert_eq!(
        field(
            store
                .create_customer(&c, CreatedVia::Api, us)
                .await
                .unwrap_err()
        ),
        "birthday"
    );
    c.birthday = None;
    c.phones = vec![NewPhone {
        number: "call me".into(),
        label: None,
    }];
    assert_eq!(
        field(
            store
                .create_customer(&c, CreatedVia::Api, us)
                .await
                .unwrap_err()
        ),
        "phones"
    );
    c.phones.clear();
    c.code = Some("DUP".into());
    store
        .create_customer(&c, CreatedVia::Api, us)
        .await
        .unwrap();
    assert_eq!(
        field(
            store
                .create_customer(&c, CreatedVia::Api, us)
                .await
                .unwrap_err()
        ),
        "code"
    );
    // Nothing half-created: one customer with code DUP, and no stray phones.
    let n: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM customers")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(n, 1);
});

on_both!(one_callback_per_call, |store: Store| async move {
    use screenpop::store::calls::OfferedCall;
    let us = region("US").unwrap();
    let c = store
        .create_customer(
            &customer("Cal", Tier::Regular, &["+1 415 555 2671"]),
            CreatedVia::Api,
            us,
        )
        .await
        .unwrap();
    let call = store
        .insert_offered_call(&OfferedCall {
            sip_call_id: "missed-1".into(),
            caller_raw: "<sip:+14155552671@gw>".into(),
            caller_e164: Some("+14155552671".into()),
            dialed: "100".into(),
            customer_id: Some(c.id),
            offered_at: 1_700_000_000_000,
        })
        .await
        .unwrap();
    let first = store
        .create_callback(call, Some(c.id), "Call back")
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(
        store
            .create_callback(call, Some(c.id), "again")
            .await
            .unwrap(),
        None
    );
    let n: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM work_order_history")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        "n",
    );
    assert_eq!(n, 1, "one history row: open");
});
