//! The store's tests, run the same on SQLite (a temp file) and on the PostgreSQL server of this
//! machine (`SCREENPOP_TEST_POSTGRES`, default postgres://postgres@127.0.0.1:5432/test), each PostgreSQL
//! run in a schema of its own. PostgreSQL being unreachable is a failure, not a skip.

#[path = "common/pg_schema.rs"]
mod pg_schema;

use screenpop::phone::{normalize, region};
use screenpop::store::customers::{CreatedVia, NewCustomer, NewPhone, Tier};
use screenpop::store::{Store, StoreError};

async fn sqlite_store(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("screenpop-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("screenpop.db").display());
    let store = Store::connect(&url).await.expect("sqlite store");
    store.migrate().await.expect("sqlite migrations");
    store
}

/// A store in a new schema of the test PostgreSQL, and that schema's name.
async fn postgres_store(tag: &str) -> (Store, String) {
    let (url, schema) = pg_schema::create(&pg_schema::base_url(), tag).await;
    let store = Store::connect(&url).await.expect("postgres store");
    store.migrate().await.expect("postgres migrations");
    (store, schema)
}

/// How many rows `table` holds.
async fn count_rows(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap()
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
                let (store, schema) = postgres_store(stringify!($name)).await;
                ($body)(store).await;
                pg_schema::drop(&pg_schema::base_url(), &schema)
                    .await
                    .expect("drop schema");
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
        opt_out_sms: false,
        opt_out_voice: true,
        birthday_calendar: Default::default(),
        tags: Vec::new(),
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

on_both!(
    unknown_callers_become_customers_withheld_ones_never,
    |store: Store| async move {
        use screenpop::crm::caller::match_or_create;
        use screenpop::sip::caller_id::CallerId;
        let us = screenpop::phone::NumberPlan::from(region("US").unwrap());
        let caller = |number: Option<&str>, name: Option<&str>, withheld: bool| CallerId {
            raw: format!("<sip:{}@gw>", number.unwrap_or("anonymous")),
            number: number.map(str::to_string),
            name: name.map(str::to_string),
            withheld,
        };
        // An unknown number becomes a customer named after the caller's display name.
        let first = match_or_create(
            &store,
            &caller(Some("4155550100"), Some("Bo Li"), false),
            us,
            true,
        )
        .await;
        assert!(first.created);
        assert_eq!(first.e164.as_deref(), Some("+14155550100"));
        let c = first.matched.customer.clone().expect("created");
        assert_eq!(
            (c.name.as_str(), c.created_via),
            ("Bo Li", CreatedVia::Call)
        );
        // The next call from it (another format) matches that customer, and creates nothing.
        let again = match_or_create(
            &store,
            &caller(Some("+1 415 555 0100"), None, false),
            us,
            true,
        )
        .await;
        assert!(!again.created);
        assert_eq!(again.matched.customer.map(|c| c.id), Some(c.id));
        // Without a display name, the number is the name; with creation off, nothing is made.
        let off =
            match_or_create(&store, &caller(Some("4155550111"), None, false), us, false).await;
        assert!(!off.created && off.matched.candidates.is_empty());
        assert_eq!(off.e164.as_deref(), Some("+14155550111"));
        let named =
            match_or_create(&store, &caller(Some("4155550112"), None, false), us, true).await;
        assert_eq!(
            named.matched.customer.map(|c| c.name),
            Some("4155550112".to_string())
        );
        // A withheld number never matches and never creates, even when it carries digits.
        let hidden =
            match_or_create(&store, &caller(Some("4155550100"), None, true), us, true).await;
        assert!(!hidden.created && hidden.e164.is_none() && hidden.matched.candidates.is_empty());
    }
);

// Eight calls at once from one new number make one customer, and each pops it: the check for
// the number and the insert are one step (an advisory lock on PostgreSQL, for several nodes).
on_both!(
    calls_at_once_from_a_new_number_make_one_customer,
    |store: Store| async move {
        use screenpop::crm::caller::match_or_create;
        use screenpop::sip::caller_id::CallerId;
        let us = screenpop::phone::NumberPlan::from(region("US").unwrap());
        let lookups = (0..8).map(|i| {
            let store = store.clone();
            // The same number written two ways: the national form is matched too.
            let number = if i % 2 == 0 {
                "+14155550177"
            } else {
                "(415) 555-0177"
            };
            async move {
                let caller = CallerId {
                    raw: format!("<sip:{number}@gw>"),
                    number: Some(number.to_string()),
                    name: None,
                    withheld: false,
                };
                match_or_create(&store, &caller, us, true).await
            }
        });
        let found = futures_util::future::join_all(lookups).await;
        let ids: Vec<Option<i64>> = found
            .iter()
            .map(|f| f.matched.customer.as_ref().map(|c| c.id))
            .collect();
        let first = ids[0].expect("a customer");
        assert!(ids.iter().all(|id| *id == Some(first)), "{ids:?}");
        assert_eq!(found.iter().filter(|f| f.created).count(), 1);
        assert!(found.iter().all(|f| f.matched.candidates.len() == 1));
        let n = count_rows(&store, "customers").await;
        assert_eq!(n, 1);
    }
);

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
    // Each candidate carries its own phones and tags (read for all of them at once).
    let mut second = customer(
        "Ann",
        Tier::Regular,
        &["+1 415 555 2671", "+1 212 555 0101"],
    );
    second.tags = vec!["wholesale".into(), "north".into()];
    let ann2 = store
        .create_customer(&second, CreatedVia::Manual, us)
        .await
        .unwrap();
    // `also` is told whom the match settled on.
    let matched = || async { store.match_caller_then(&n, |id| async move { id }).await };
    let (m, seen) = matched().await.unwrap();
    assert_eq!(seen, None, "no best guess: nothing read for one");
    let by_id = |id: i64| m.candidates.iter().find(|c| c.id == id).unwrap();
    assert_eq!(m.candidates.len(), 3);
    assert_eq!(by_id(ann2.id).phones, ann2.phones);
    assert_eq!(by_id(ann2.id).tags, ["north", "wholesale"]);
    assert_eq!(by_id(bob.id).phones, bob.phones);
    assert!(by_id(bob.id).tags.is_empty());
    assert_eq!(by_id(ann.id).phones, ann.phones);
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
    let (m, seen) = matched().await.unwrap();
    assert_eq!(
        m.customer.map(|c| c.id),
        Some(bob.id),
        "the one contacted most recently"
    );
    assert_eq!(
        seen,
        Some(bob.id),
        "read beside the match for the best guess"
    );
    assert_eq!(
        store.customer(bob.id).await.unwrap().unwrap(),
        *by_id(bob.id)
    );
});

on_both!(
    caller_card_is_the_match_and_the_best_guess_history,
    |store: Store| async move {
        use screenpop::store::work_orders::*;
        let us = region("US").unwrap();
        let mut first = customer("张伟", Tier::Vip, &["+1 415 555 2671", "(212) 555-0100"]);
        first.tags = vec!["north".into(), "gold".into()];
        first.notes = Some("says \"hi\"\n\\ then 'bye' 🎉".into());
        let ann = store
            .create_customer(&first, CreatedVia::Manual, us)
            .await
            .unwrap();
        let new = |name: &'static str, tier: Tier, phone: &'static str| {
            let store = store.clone();
            async move {
                let c = customer(name, tier, &[phone]);
                store
                    .create_customer(&c, CreatedVia::Manual, us)
                    .await
                    .unwrap()
            }
        };
        let bob = new("Bob", Tier::Key, "415-555-2671").await;
        let carol = new("Carol", Tier::Regular, "+1 303 555 0150").await;
        let odd = new("Odd", Tier::Regular, "0 123456").await;
        // Seven contacts for 张伟 (two at the same moment: the later id comes first), one older
        // for Bob.
        let contacts = [
            (ann.id, 1_700_000_001_000i64, "first"),
            (ann.id, 1_700_000_005_000, "fifth"),
            (ann.id, 1_700_000_003_000, "third, \"quoted\""),
            (ann.id, 1_700_000_007_000, "tie a"),
            (ann.id, 1_700_000_007_000, "tie b"),
            (ann.id, 1_700_000_002_000, "second"),
            (ann.id, 1_700_000_006_000, "回电 sixth"),
            (bob.id, 1_600_000_000_000, "bob's"),
        ];
        for (i, (who, at, notes)) in contacts.iter().enumerate() {
            sqlx::query(
            "INSERT INTO calls (sip_call_id, direction, caller_raw, caller_e164, dialed, \
             customer_id, offered_at, created_by, notes, talk_secs, disposition) \
             VALUES ($1, 'inbound', '4155552671', '+14155552671', '100', $2, $3, 'test', $4, $5, 'answered')",
        )
        .bind(format!("card-{i}"))
        .bind(*who)
        .bind(*at)
        .bind(notes.to_string())
        .bind(i as i64 * 7)
        .execute(store.pool())
        .await
        .unwrap();
        }
        let order = |priority: i64, title: &str, customer: i64| NewWorkOrder {
            kind: WorkOrderKind::Service,
            priority,
            title: title.to_string(),
            description: Some("läuft; \"nicht\" ok".into()),
            assignee_agent_id: None,
            due_at: Some(1_700_100_000_000),
            call_id: None,
            customer_id: Some(customer),
        };
        // A work order for `customer`, moved on to `status`.
        let add = |priority: i64, title: &'static str, customer: i64, status: WorkOrderStatus| {
            let store = store.clone();
            let w = order(priority, title, customer);
            async move {
                let w = store.create_work_order(&w, "t").await.unwrap();
                if status == WorkOrderStatus::Open {
                    return w;
                }
                let patch = WorkOrderPatch {
                    status: Some(status),
                    ..Default::default()
                };
                store.update_work_order(w.id, &patch, "t").await.unwrap()
            }
        };
        let low = add(4, "low", ann.id, WorkOrderStatus::Open).await;
        let urgent = add(1, "urgent", ann.id, WorkOrderStatus::Open).await;
        add(1, "closed", ann.id, WorkOrderStatus::Closed).await;
        add(4, "busy", ann.id, WorkOrderStatus::InProgress).await;
        add(2, "bob's", bob.id, WorkOrderStatus::Open).await;

        // What the card must be: the match, and the best guess's history read on its own.
        let separately = |raw: &'static str| {
            let store = store.clone();
            async move {
                let n = normalize(raw, us).unwrap();
                let m = store.match_caller(&n).await.unwrap();
                let history = match &m.customer {
                    Some(c) => Some(store.customer_history(c.id, 5).await.unwrap()),
                    None => None,
                };
                let card = store.caller_card(&n, 5).await.unwrap();
                assert_eq!(card, (m, history), "{raw}");
                card
            }
        };
        // Two candidates on the number: 张伟, contacted last, is the best guess.
        let (m, history) = separately("4155552671").await;
        assert_eq!(m.candidates.len(), 2);
        assert_eq!(m.customer.as_ref().map(|c| c.id), Some(ann.id));
        let c = m.customer.unwrap();
        assert_eq!(
            (c.phones.clone(), c.tags.clone()),
            (ann.phones.clone(), vec!["gold".to_string(), "north".into()])
        );
        assert_eq!(c.notes, first.notes);
        let history = history.expect("the best guess's history");
        let notes: Vec<_> = history
            .recent_contacts
            .iter()
            .map(|l| l.notes.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            notes,
            ["tie b", "tie a", "回电 sixth", "fifth", "third, \"quoted\""]
        );
        let titles: Vec<_> = history
            .open_work_orders
            .iter()
            .map(|w| (w.title.as_str(), w.status))
            .collect();
        assert_eq!(
            titles,
            [
                ("urgent", WorkOrderStatus::Open),
                ("busy", WorkOrderStatus::InProgress),
                ("low", WorkOrderStatus::Open),
            ]
        );
        assert_eq!(history.open_work_orders[0], urgent);
        assert_eq!(history.open_work_orders[2], low);
        // One customer on the number; by the national digits; nobody.
        let (m, history) = separately("(212) 555-0100").await;
        assert_eq!(m.customer.map(|c| c.id), Some(ann.id));
        assert_eq!(history.map(|h| h.recent_contacts.len()), Some(5));
        let (m, history) = separately("3035550150").await;
        assert_eq!(m.customer.map(|c| c.id), Some(carol.id));
        assert_eq!(
            history,
            Some(Default::default()),
            "never contacted: an empty history"
        );
        let (m, _) = separately("123456").await;
        assert_eq!(m.customer.map(|c| c.id), Some(odd.id));
        let (m, history) = separately("+1 303 555 0199").await;
        assert!(m.candidates.is_empty() && m.customer.is_none() && history.is_none());
        // Two candidates, neither contacted: no best guess, no history.
        let dup = new("Carol's twin", Tier::Regular, "303-555-0150").await;
        let (m, history) = separately("3035550150").await;
        assert_eq!(
            m.candidates.iter().map(|c| c.id).collect::<Vec<_>>(),
            [carol.id, dup.id]
        );
        assert!(m.customer.is_none() && history.is_none());
    }
);

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
    let n = count_rows(&store, "customers").await;
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
        .create_callback(call, Some(c.id), None, "Call back")
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(
        store
            .create_callback(call, Some(c.id), None, "again")
            .await
            .unwrap(),
        None
    );
    let n = count_rows(&store, "work_order_history").await;
    assert_eq!(n, 1, "one history row: open");
});

// The contact log row's id is reserved at offer and the row written beside the pop (on both
// databases: on SQLite the INSERT would wait for the one writer); the call's end writes the row from the call's record if it is not there (its write
// failed or has not landed), then completes it. Writing it when it is there changes nothing,
// and the reserved ids are never handed out again.
on_both!(
    missing_contact_log_row_written_at_end,
    |store: Store| async move {
        use screenpop::store::calls::{CallDisposition, EndedCall, OfferedCall};
        let offered = OfferedCall {
            sip_call_id: "lost-1@gw".into(),
            caller_raw: "+14155552671".into(),
            caller_e164: Some("+14155552671".into()),
            dialed: "100".into(),
            customer_id: None,
            offered_at: 1_700_000_000_000,
        };
        let id = store
            .reserve_call_id()
            .await
            .unwrap()
            .expect("an id reserved on either database");
        let ended = EndedCall {
            agent_id: None,
            queue_id: None,
            answered_at: Some(1_700_000_002_000),
            ended_at: 1_700_000_062_000,
            disposition: CallDisposition::Answered,
            recording_id: None,
            survey_offered_at: None,
            survey_score: None,
            recording_failed: false,
        };
        assert!(matches!(
            store.finish_call(id, &ended).await,
            Err(StoreError::NotFound(_))
        ));
        store.write_call_row(id, &offered, false).await.unwrap();
        store.finish_call(id, &ended).await.unwrap();
        store.write_call_row(id, &offered, true).await.unwrap();
        let row = sqlx::query(
            "SELECT sip_call_id, direction, caller_e164, disposition, talk_secs FROM calls \
         WHERE id = $1",
        )
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let text = |c: &str| sqlx::Row::get::<String, _>(&row, c);
        assert_eq!(
            (
                text("sip_call_id"),
                text("direction"),
                text("caller_e164"),
                text("disposition")
            ),
            (
                "lost-1@gw".to_string(),
                "inbound".to_string(),
                "+14155552671".to_string(),
                "answered".to_string()
            )
        );
        assert_eq!(sqlx::Row::get::<i64, _>(&row, "talk_secs"), 60);
        let next = store
            .insert_offered_call(&OfferedCall {
                sip_call_id: "lost-2@gw".into(),
                ..offered
            })
            .await
            .unwrap();
        assert!(next > id, "a new call gets a new id: {next} after {id}");
        // Reserved ids are each handed out once, and never one a row has, past a block.
        let mut seen = std::collections::HashSet::from([id, next]);
        for _ in 0..600 {
            let r = store.reserve_call_id().await.unwrap().expect("reserved");
            assert!(seen.insert(r), "{r} handed out twice");
        }
    }
);

/// Two processes on one SQLite file (the service and a command-line tool) never get the same
/// contact log id: a reserved block moves the table's counter on, so the other's INSERTs land
/// after it, and the blocks the two reserve do not overlap.
#[tokio::test]
async fn sqlite_reserved_ids_are_not_taken_by_another_process() {
    use screenpop::store::calls::OfferedCall;
    let service = sqlite_store("reserved_ids").await;
    let dir = std::env::temp_dir().join(format!(
        "screenpop-store-reserved_ids-{}",
        std::process::id()
    ));
    let url = format!("sqlite://{}", dir.join("screenpop.db").display());
    let tool = Store::connect(&url)
        .await
        .expect("a second store on the file");
    let offered = |i: usize| OfferedCall {
        sip_call_id: format!("ids-{i}@gw"),
        caller_raw: "+14155552671".into(),
        caller_e164: Some("+14155552671".into()),
        dialed: "100".into(),
        customer_id: None,
        offered_at: 1_700_000_000_000,
    };
    let mut reserved = Vec::new();
    let mut inserted = Vec::new();
    for i in 0..300 {
        reserved.push(service.reserve_call_id().await.unwrap().expect("reserved"));
        reserved.push(tool.reserve_call_id().await.unwrap().expect("reserved"));
        inserted.push(tool.insert_offered_call(&offered(i)).await.unwrap());
    }
    let mut all = std::collections::HashSet::new();
    for id in reserved.iter().chain(&inserted) {
        assert!(all.insert(*id), "id {id} given twice");
    }
    // The reserved ids are usable: each row written with its id lands.
    for (i, id) in reserved.iter().enumerate() {
        service
            .write_call_row(*id, &offered(1000 + i), false)
            .await
            .unwrap();
    }
    let n = count_rows(&service, "calls").await;
    assert_eq!(n as usize, reserved.len() + inserted.len());
}

// The calls' writes go in batches, one transaction for all the writes waiting: a write that
// fails (here an agent that does not exist) fails alone, and the writes beside it land. On
// SQLite only the failing statement is undone; PostgreSQL aborts the batch's transaction, and
// its writes are made again one by one.
on_both!(batched_writes_fail_alone, |store: Store| async move {
    use screenpop::store::calls::OfferedCall;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(store.reserve_call_id().await.unwrap().expect("reserved"));
    }
    let writes = ids.iter().enumerate().map(|(i, id)| {
        let store = store.clone();
        let id = *id;
        async move {
            if i == 100 {
                // No agent 999 999: the foreign key refuses it.
                store.set_call_agents(id, &[(999_999, 0, 1000)]).await.err()
            } else {
                let offered = OfferedCall {
                    sip_call_id: format!("batch-{i}@gw"),
                    caller_raw: "+14155552671".into(),
                    caller_e164: None,
                    dialed: "100".into(),
                    customer_id: None,
                    offered_at: 1_700_000_000_000,
                };
                store.write_call_row(id, &offered, false).await.err()
            }
        }
    });
    let results = futures_util::future::join_all(writes).await;
    for (i, r) in results.iter().enumerate() {
        if i == 100 {
            assert!(r.is_some(), "the bad write is refused");
        } else {
            assert!(r.is_none(), "write {i} failed: {r:?}");
        }
    }
    let n = count_rows(&store, "calls").await;
    assert_eq!(n, 199);
});

/// SQLite's WAL is copied back into the database file by screenpop's checkpointer, not by the
/// commit that crosses 1,000 pages (that commit was a caller's contact log, and the pop waited
/// for the checkpoint's fsync): the pool's connections never checkpoint, and within a few
/// seconds of the writes the database file holds them.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_off_the_call_path() {
    use screenpop::store::calls::OfferedCall;
    let store = sqlite_store("wal_checkpoint").await;
    let auto: i64 = sqlx::Row::get(
        &sqlx::query("PRAGMA wal_autocheckpoint")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        0,
    );
    assert_eq!(auto, 0, "commits never checkpoint");
    let dir = std::env::temp_dir().join(format!(
        "screenpop-store-wal_checkpoint-{}",
        std::process::id()
    ));
    let db = dir.join("screenpop.db");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let before = std::fs::metadata(&db).unwrap().len();
    for i in 0..3000 {
        store
            .insert_offered_call(&OfferedCall {
                sip_call_id: format!("wal-{i}@gw"),
                caller_raw: "+14155552671".into(),
                caller_e164: Some("+14155552671".into()),
                dialed: "100".into(),
                customer_id: None,
                offered_at: 1_700_000_000_000 + i,
            })
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&db).unwrap().len();
        if now >= before + 100 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes (was {before}): nothing checkpointed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn agent(
    username: &str,
    sip: screenpop::store::agents::SipTarget,
) -> screenpop::store::agents::NewAgent {
    screenpop::store::agents::NewAgent {
        username: username.into(),
        display_name: username.to_uppercase(),
        role: screenpop::store::agents::Role::Agent,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        sip,
        skills: ["billing".to_string()].into_iter().collect(),
        queues: Default::default(),
    }
}

on_both!(agents_queues_and_sessions, |store: Store| async move {
    use screenpop::store::agents::{NewQueue, SipTarget};
    let q = store
        .create_queue(&NewQueue {
            name: "support".into(),
            dialed_numbers: vec!["8005550100".into()],
            ring_timeout_secs: 15,
            max_wait_secs: 60,
            wrap_up_secs: 5,
            required_skills: vec!["billing".into()],
            is_default: true,
            service_level_secs: 20,
            active: true,
            crm_url: Some("https://crm.example/c?phone={e164}".into()),
            music: None,
            survey_prompt: None,
            survey_thanks: None,
            survey_timeout_secs: 8,
            keep_recordings_days: None,
        })
        .await
        .unwrap();
    assert_eq!(
        q.crm_url.as_deref(),
        Some("https://crm.example/c?phone={e164}")
    );
    assert!(q.is_default);
    let mut a = agent("alice", SipTarget::Uri("sip:alice@10.0.0.5".into()));
    a.queues.insert(q.id);
    let alice = store.create_agent(&a).await.unwrap();
    assert_eq!(alice.queues.iter().copied().collect::<Vec<_>>(), [q.id]);
    assert_eq!(alice.sip, SipTarget::Uri("sip:alice@10.0.0.5".into()));
    let phone = SipTarget::Registered {
        username: "1002".into(),
        ha1_md5: "m".into(),
        ha1_sha256: "s".into(),
    };
    let bob = store
        .create_agent(&agent("bob", phone.clone()))
        .await
        .unwrap();
    assert_eq!(bob.sip, phone);
    // Usernames and SIP usernames are unique, named in the error.
    match store.create_agent(&agent("alice", SipTarget::None)).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "username"),
        other => panic!("{other:?}"),
    }
    match store.create_agent(&agent("carol", phone)).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "sip_username"),
        other => panic!("{other:?}"),
    }
    let mut bad = agent("dave", SipTarget::None);
    bad.queues.insert(q.id + 99);
    match store.create_agent(&bad).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "queues"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.agents().await.unwrap().len(), 2);
    // A second default queue takes the flag.
    let q2 = store
        .create_queue(&NewQueue {
            name: "sales".into(),
            dialed_numbers: vec![],
            ring_timeout_secs: 20,
            max_wait_secs: 120,
            wrap_up_secs: 0,
            required_skills: vec![],
            is_default: true,
            service_level_secs: 20,
            active: true,
            crm_url: None,
            music: None,
            survey_prompt: None,
            survey_thanks: None,
            survey_timeout_secs: 8,
            keep_recordings_days: None,
        })
        .await
        .unwrap();
    let queues = store.queues().await.unwrap();
    assert_eq!(
        queues
            .iter()
            .filter(|q| q.is_default)
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        [q2.id]
    );
    // Sessions: found while live, never after expiry.
    store
        .create_session("live", alice.id, 60_000)
        .await
        .unwrap();
    store.create_session("dead", alice.id, -1).await.unwrap();
    assert_eq!(
        store.session_agent("live").await.unwrap().map(|a| a.id),
        Some(alice.id)
    );
    assert!(store.session_agent("dead").await.unwrap().is_none());
    assert!(store.session_agent("nope").await.unwrap().is_none());
});

on_both!(
    work_orders_move_through_their_workflow_with_history,
    |store: Store| async move {
        use screenpop::store::work_orders::*;
        let us = screenpop::phone::NumberPlan::from(region("US").unwrap());
        let c = store
            .create_customer(
                &customer("Wu", Tier::Key, &["+14155550111"]),
                CreatedVia::Api,
                us,
            )
            .await
            .unwrap();
        let wo = store
            .create_work_order(
                &NewWorkOrder {
                    kind: WorkOrderKind::Complaint,
                    priority: 2,
                    title: "Noisy line".into(),
                    description: None,
                    assignee_agent_id: None,
                    due_at: None,
                    call_id: None,
                    customer_id: Some(c.id),
                },
                "alice",
            )
            .await
            .unwrap();
        assert_eq!(wo.status, WorkOrderStatus::Open);
        let step = |s: WorkOrderStatus| WorkOrderPatch {
            status: Some(s),
            ..WorkOrderPatch::default()
        };
        match store
            .update_work_order(wo.id, &step(WorkOrderStatus::Resolved), "alice")
            .await
        {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "status"),
            other => panic!("{other:?}"),
        }
        for s in [
            WorkOrderStatus::InProgress,
            WorkOrderStatus::Resolved,
            WorkOrderStatus::Closed,
        ] {
            assert_eq!(
                store
                    .update_work_order(wo.id, &step(s), "alice")
                    .await
                    .unwrap()
                    .status,
                s
            );
        }
        let p = WorkOrderPatch {
            priority: Some(1),
            description: Some("caller says it is worse".into()),
            ..WorkOrderPatch::default()
        };
        store.update_work_order(wo.id, &p, "bob").await.unwrap();
        let bad = WorkOrderPatch {
            priority: Some(9),
            ..WorkOrderPatch::default()
        };
        assert!(store.update_work_order(wo.id, &bad, "bob").await.is_err());
        let h = store.work_order_history(wo.id).await.unwrap();
        let seen: Vec<(&str, Option<&str>)> = h
            .iter()
            .map(|c| (c.field.as_str(), c.new_value.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("status", Some("open")),
                ("status", Some("in_progress")),
                ("status", Some("resolved")),
                ("status", Some("closed")),
                ("priority", Some("1")),
                ("description", Some("caller says it is worse")),
            ]
        );
        assert_eq!(h[4].actor, "bob");
        // Closed orders are not "open" on the pop; filters work.
        assert!(store.open_work_orders(c.id).await.unwrap().is_empty());
        let f = WorkOrderFilter {
            status: Some(WorkOrderStatus::Closed),
            customer: Some(c.id),
            limit: 10,
            ..WorkOrderFilter::default()
        };
        assert_eq!(store.work_orders(&f).await.unwrap().len(), 1);
    }
);

on_both!(
    contact_logs_filter_by_date_agent_number_and_disposition,
    |store: Store| async move {
        use screenpop::store::calls::*;
        let mut ids = Vec::new();
        for (i, (num, disp)) in [
            ("+14155550001", CallDisposition::Answered),
            ("+14155550002", CallDisposition::Missed),
            ("+14155550001", CallDisposition::Abandoned),
        ]
        .iter()
        .enumerate()
        {
            let id = store
                .insert_offered_call(&OfferedCall {
                    sip_call_id: format!("filter-{i}"),
                    caller_raw: num.trim_start_matches("+1").to_string(),
                    caller_e164: Some(num.to_string()),
                    dialed: "8005550100".into(),
                    customer_id: None,
                    offered_at: 1_000_000 + i as i64 * 1000,
                })
                .await
                .unwrap();
            store
                .finish_call(
                    id,
                    &EndedCall {
                        agent_id: None,
                        queue_id: None,
                        answered_at: None,
                        ended_at: 1_000_500 + i as i64 * 1000,
                        disposition: *disp,
                        recording_id: None,
                        survey_offered_at: None,
                        survey_score: None,
                        recording_failed: false,
                    },
                )
                .await
                .unwrap();
            ids.push(id);
        }
        let q = |f: CallFilter| {
            let store = store.clone();
            async move {
                store
                    .contact_logs(&CallFilter { limit: 50, ..f })
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(q(CallFilter::default()).await, [ids[2], ids[1], ids[0]]);
        assert_eq!(
            q(CallFilter {
                number: Some("+14155550001".into()),
                ..Default::default()
            })
            .await,
            [ids[2], ids[0]]
        );
        assert_eq!(
            q(CallFilter {
                disposition: Some("missed".into()),
                ..Default::default()
            })
            .await,
            [ids[1]]
        );
        assert_eq!(
            q(CallFilter {
                from_ms: Some(1_001_000),
                to_ms: Some(1_002_000),
                ..Default::default()
            })
            .await,
            [ids[1]]
        );
        assert_eq!(
            q(CallFilter {
                before: Some(ids[1]),
                ..Default::default()
            })
            .await,
            [ids[0]]
        );
        let annotated = store
            .annotate_call(ids[0], Some("备注"), Some("sale"))
            .await
            .unwrap();
        assert_eq!(annotated.notes.as_deref(), Some("备注"));
        assert_eq!(annotated.agent_disposition.as_deref(), Some("sale"));
    }
);

on_both!(
    csv_import_is_all_or_nothing_and_round_trips,
    |store: Store| async move {
        use screenpop::crm::csv::{export, import};
        let us = screenpop::phone::NumberPlan::from(region("US").unwrap());
        // Two bad rows: every reason reported, nothing written.
        let bad = "name,code,tier,phones,birthday\n\
               王芳,K1,vip,mobile:+1 (415) 555-0100,1990-01-31\n\
               ,K2,regular,4155550101,\n\
               李雷,K3,gold,4155550102,\n\
               Ann,K1,key,415.555.0103,\n";
        let r = import(&store, bad.as_bytes(), us).await.unwrap();
        assert_eq!(r.imported, 0);
        let lines: Vec<(u64, Option<&str>)> = r
            .rejected
            .iter()
            .map(|x| (x.line, x.field.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [(3, Some("name")), (4, Some("tier")), (5, Some("code"))],
            "{:?}",
            r.rejected
        );
        assert!(store.customers_after(0, 10).await.unwrap().is_empty());
        // Not UTF-8: rejected with its line.
        let latin1 = b"name,phones\nJos\xe9,4155550100\n";
        let r = import(&store, latin1, us).await.unwrap();
        assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
        assert!(r.rejected[0].reason.contains("UTF-8"));
        // A good file, with a BOM, Chinese names and several number formats.
        let good = "\u{feff}Name,Code,Company,Tier,Phone,Mobile,Birthday\n\
                王芳,K1,华为,vip,+1 (415) 555-0100,415.555.0199,1990-01-31\n\
                \"Smith, John\",K2,,key,00 1 212 555 0100,,\n\
                李雷,,,,(212) 555-0177,,\n";
        let r = import(&store, good.as_bytes(), us).await.unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(r.imported, 3);
        let all = store.customers_after(0, 10).await.unwrap();
        assert_eq!(all[0].name, "王芳");
        assert_eq!(all[0].created_via, CreatedVia::Import);
        assert_eq!(all[0].phones.len(), 2);
        assert_eq!(all[0].phones[0].e164.as_deref(), Some("+14155550100"));
        assert_eq!(all[0].phones[1].label.as_deref(), Some("mobile"));
        assert_eq!(all[1].name, "Smith, John");
        assert_eq!(all[1].phones[0].e164.as_deref(), Some("+12125550100"));
        // Codes already in the store are refused on the next import.
        let r = import(&store, "name,code\nX,K2\n".as_bytes(), us)
            .await
            .unwrap();
        assert_eq!(
            r.rejected.first().and_then(|x| x.field.as_deref()),
            Some("code")
        );
        // Export then import into an empty store gives the same customers.
        let mut out = Vec::new();
        export(&store, &mut out).await.unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("王芳") && text.contains("\"Smith, John\""),
            "{text}"
        );
        let other = sqlite_store(&format!("csv_copy_{:08x}", rand::random::<u32>())).await;
        let r = import(&other, &out, us).await.unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let copy = other.customers_after(0, 10).await.unwrap();
        let key = |c: &screenpop::store::customers::Customer| {
            (
                c.code.clone(),
                c.name.clone(),
                c.tier,
                c.birthday.clone(),
                c.phones.iter().map(|p| p.e164.clone()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            copy.iter().map(key).collect::<Vec<_>>(),
            all.iter().map(key).collect::<Vec<_>>()
        );
    }
);

on_both!(
    customers_update_and_replace_phones,
    |store: Store| async move {
        use screenpop::store::customers::CustomerPatch;
        let us = screenpop::phone::NumberPlan::from(region("US").unwrap());
        let c = store
            .create_customer(
                &customer("Old Name", Tier::Regular, &["+14155550111"]),
                CreatedVia::Api,
                us,
            )
            .await
            .unwrap();
        assert!(c.opt_out_voice && !c.opt_out_sms);
        let p = CustomerPatch {
            name: Some("新名字".into()),
            tier: Some(Tier::Vip),
            opt_out_sms: Some(true),
            phones: Some(vec![NewPhone {
                number: "(212) 555-0199".into(),
                label: Some("office".into()),
            }]),
            ..CustomerPatch::default()
        };
        let u = store.update_customer(c.id, &p, us).await.unwrap();
        assert_eq!(
            (u.name.as_str(), u.tier, u.opt_out_sms),
            ("新名字", Tier::Vip, true)
        );
        assert_eq!(u.company, c.company, "untouched fields stay");
        assert_eq!(u.phones.len(), 1);
        assert_eq!(u.phones[0].e164.as_deref(), Some("+12125550199"));
        // The old number no longer matches; the new one does.
        let old = store
            .match_caller(&normalize("+14155550111", us).unwrap())
            .await
            .unwrap();
        assert!(old.candidates.is_empty());
        let new = store
            .match_caller(&normalize("2125550199", us).unwrap())
            .await
            .unwrap();
        assert_eq!(new.customer.map(|c| c.id), Some(c.id));
        // Bad input names the field and changes nothing.
        let bad = CustomerPatch {
            birthday: Some("1990-13-01".into()),
            ..CustomerPatch::default()
        };
        match store.update_customer(c.id, &bad, us).await {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "birthday"),
            other => panic!("{other:?}"),
        }
        let ghost = CustomerPatch {
            assigned_agent_id: Some(4242),
            ..CustomerPatch::default()
        };
        match store.update_customer(c.id, &ghost, us).await {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "assigned_agent_id"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.customer(c.id).await.unwrap().unwrap().birthday,
            u.birthday
        );
        assert!(matches!(
            store
                .update_customer(c.id + 99, &CustomerPatch::default(), us)
                .await,
            Err(StoreError::NotFound(_))
        ));
    }
);

on_both!(agents_and_queues_change, |store: Store| async move {
    use screenpop::store::agents::{AgentPatch, NewQueue, QueuePatch, SipTarget};
    let nq = |name: &str| NewQueue {
        name: name.into(),
        dialed_numbers: vec![],
        ring_timeout_secs: 20,
        max_wait_secs: 60,
        wrap_up_secs: 5,
        required_skills: vec![],
        is_default: false,
        service_level_secs: 20,
        active: true,
        crm_url: None,
        music: None,
        survey_prompt: None,
        survey_thanks: None,
        survey_timeout_secs: 8,
        keep_recordings_days: None,
    };
    let q1 = store.create_queue(&nq("one")).await.unwrap();
    let q2 = store.create_queue(&nq("two")).await.unwrap();
    let mut a = agent("zoe", SipTarget::None);
    a.queues.insert(q1.id);
    let zoe = store.create_agent(&a).await.unwrap();
    let p = AgentPatch {
        display_name: Some("Zoe Li".into()),
        queues: Some([q2.id].into_iter().collect()),
        sip: Some(SipTarget::Uri("sip:zoe@pbx.example".into())),
        ..AgentPatch::default()
    };
    let z = store.update_agent(zoe.id, &p).await.unwrap();
    assert_eq!(z.display_name, "Zoe Li");
    assert_eq!(z.queues.into_iter().collect::<Vec<_>>(), [q2.id]);
    assert_eq!(z.sip, SipTarget::Uri("sip:zoe@pbx.example".into()));
    assert_eq!(z.password_hash, zoe.password_hash, "untouched");
    let qp = QueuePatch {
        is_default: Some(true),
        max_wait_secs: Some(30),
        ..QueuePatch::default()
    };
    store.update_queue(q2.id, &qp).await.unwrap();
    let qs = store.queues().await.unwrap();
    assert_eq!(
        qs.iter()
            .filter(|q| q.is_default)
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        [q2.id]
    );
    assert_eq!(
        qs.iter().find(|q| q.id == q2.id).map(|q| q.max_wait_secs),
        Some(30)
    );
    let dup = QueuePatch {
        name: Some("one".into()),
        ..QueuePatch::default()
    };
    match store.update_queue(q2.id, &dup).await {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "name"),
        other => panic!("{other:?}"),
    }
});

on_both!(
    a_call_screenpop_could_not_put_through_stays_failed,
    |store: Store| async move {
        use screenpop::store::calls::*;
        let id = store
            .insert_offered_call(&OfferedCall {
                sip_call_id: "failed-1".into(),
                caller_raw: "+14155550009".into(),
                caller_e164: Some("+14155550009".into()),
                dialed: "8005550100".into(),
                customer_id: None,
                offered_at: 2_000_000,
            })
            .await
            .unwrap();
        let ended = EndedCall {
            agent_id: None,
            queue_id: None,
            answered_at: None,
            ended_at: 2_000_400,
            disposition: CallDisposition::Failed,
            recording_id: None,
            survey_offered_at: None,
            survey_score: None,
            recording_failed: false,
        };
        store.finish_call(id, &ended).await.unwrap();
        let logs = store
            .contact_logs(&CallFilter {
                disposition: Some("failed".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(logs.iter().map(|c| c.id).collect::<Vec<_>>(), [id]);
        assert_eq!(logs[0].disposition.as_deref(), Some("failed"));
        // Like every call nobody answered, it gets its callback.
        let title =
            screenpop::crm::callback::callback_title(ended.disposition, Some("+14155550009"));
        assert_eq!(
            title.as_deref(),
            Some("Call back +14155550009 (failed call)")
        );
        assert!(store
            .create_callback(id, None, None, title.as_deref().unwrap_or_default())
            .await
            .unwrap()
            .is_some());
    }
);

on_both!(
    webhook_deliveries_keep_order_per_subject,
    |store: Store| async move {
        use screenpop::store::webhooks::{DeliveryStatus, NewDelivery, NewWebhook, Outcome};
        let hook = store
            .create_webhook(
                &NewWebhook {
                    url: "https://crm.example/hook".into(),
                    events: vec!["call.offered".into(), "call.ended".into()],
                    secret: "0123456789abcdef".into(),
                },
                "root",
                1_000,
            )
            .await
            .unwrap();
        assert_eq!(hook.events, ["call.offered", "call.ended"]);
        assert_eq!(store.webhooks().await.unwrap(), vec![hook.clone()]);
        let d = |subject: &'static str, kind: &'static str| NewDelivery {
            webhook_id: hook.id,
            event_type: kind,
            subject,
            body: "{}",
        };
        // Call a: three events; call b: one; one for a webhook that does not exist (dropped).
        let ids = store
            .enqueue_webhook_deliveries(
                &[
                    d("call:a", "call.offered"),
                    d("call:b", "call.offered"),
                    d("call:a", "call.answered"),
                    NewDelivery {
                        webhook_id: hook.id + 100,
                        ..d("call:c", "call.offered")
                    },
                ],
                2_000,
            )
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        let a3 = store
            .enqueue_webhook_deliveries(&[d("call:a", "call.ended")], 2_001)
            .await
            .unwrap()[0];
        let (a1, b1, a2) = (ids[0], ids[1], ids[2]);
        assert_eq!(store.next_webhook_attempt_at().await.unwrap(), Some(2_000));

        // Only the oldest pending of each subject is due; a claimed one is leased.
        let c = store
            .claim_webhook_deliveries(hook.id, 2_500, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [a1, b1]);
        assert_eq!((c[0].subject.as_str(), c[0].attempts), ("call:a", 0));
        assert!(store
            .claim_webhook_deliveries(hook.id, 2_600, 60_000, 10)
            .await
            .unwrap()
            .is_empty());

        // a1 fails: retried later, a2 still waits. b1 is delivered.
        store
            .finish_webhook_delivery(
                a1,
                3_000,
                &Outcome::Retry {
                    at: 4_000,
                    status: Some(503),
                    error: "HTTP 503".into(),
                },
            )
            .await
            .unwrap();
        store
            .finish_webhook_delivery(b1, 3_000, &Outcome::Delivered { status: 200 })
            .await
            .unwrap();
        assert!(store
            .claim_webhook_deliveries(hook.id, 3_500, 60_000, 10)
            .await
            .unwrap()
            .is_empty());
        let h = store.webhook_health(hook.id).await.unwrap();
        assert_eq!((h.delivered, h.pending, h.failing, h.failed), (1, 3, 1, 0));
        assert_eq!(h.last_success_at, Some(3_000));
        assert_eq!(
            (h.last_error.as_deref(), h.last_error_at),
            (Some("HTTP 503"), Some(3_000))
        );

        // The retry is due at 4000; delivered, it releases a2, whose give-up releases a3.
        let c = store
            .claim_webhook_deliveries(hook.id, 4_000, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(
            c.iter().map(|c| (c.id, c.attempts)).collect::<Vec<_>>(),
            [(a1, 1)]
        );
        store
            .finish_webhook_delivery(a1, 4_100, &Outcome::Delivered { status: 204 })
            .await
            .unwrap();
        let c = store
            .claim_webhook_deliveries(hook.id, 4_200, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [a2]);
        store
            .finish_webhook_delivery(
                a2,
                4_300,
                &Outcome::Failed {
                    status: None,
                    error: "connection refused".into(),
                },
            )
            .await
            .unwrap();
        let c = store
            .claim_webhook_deliveries(hook.id, 4_400, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [a3]);

        // A lease that runs out (the process died mid-attempt) makes it due again.
        let again = store
            .claim_webhook_deliveries(hook.id, 60_000 + 4_400, 200_000, 10)
            .await
            .unwrap();
        assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), [a3]);

        let list = store
            .webhook_deliveries(hook.id, None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            list.iter().map(|d| (d.id, d.status)).collect::<Vec<_>>(),
            [
                (a3, DeliveryStatus::Pending),
                (a2, DeliveryStatus::Failed),
                (b1, DeliveryStatus::Delivered),
                (a1, DeliveryStatus::Delivered),
            ]
        );
        assert_eq!(list[3].attempts, 2);
        assert_eq!(list[3].delivered_at, Some(4_100));
        assert_eq!(list[1].last_error.as_deref(), Some("connection refused"));
        let failed = store
            .webhook_deliveries(hook.id, Some(DeliveryStatus::Failed), None, 10)
            .await
            .unwrap();
        assert_eq!(failed.iter().map(|d| d.id).collect::<Vec<_>>(), [a2]);
        let page = store
            .webhook_deliveries(hook.id, None, Some(a2), 10)
            .await
            .unwrap();
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [b1, a1]);

        // A waiting delivery with nothing before it is released by the safety net.
        let x = store
            .enqueue_webhook_deliveries(
                &[d("call:x", "call.offered"), d("call:x", "call.ended")],
                5_000,
            )
            .await
            .unwrap();
        sqlx::query("UPDATE webhook_deliveries SET status = 'delivered' WHERE id = $1")
            .bind(x[0])
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            store
                .release_stranded_webhook_deliveries(6_000)
                .await
                .unwrap(),
            1
        );
        let c = store
            .claim_webhook_deliveries(hook.id, 6_000, 60_000, 10)
            .await
            .unwrap();
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [x[1]]);

        // Pruning forgets finished deliveries only; deleting the webhook takes the rest.
        assert_eq!(store.prune_webhook_deliveries(4_500).await.unwrap(), 3);
        assert_eq!(store.webhook_health(hook.id).await.unwrap().pending, 2);
        store.delete_webhook(hook.id).await.unwrap();
        assert!(matches!(
            store.delete_webhook(hook.id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store
            .webhook_deliveries(hook.id, None, None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.next_webhook_attempt_at().await.unwrap(), None);
    }
);

on_both!(
    a_contact_log_lists_every_agent_who_had_the_call,
    |store: Store| async move {
        use screenpop::store::calls::*;
        let a = store
            .create_agent(&agent("turn-a", screenpop::store::agents::SipTarget::None))
            .await
            .unwrap();
        let b = store
            .create_agent(&agent("turn-b", screenpop::store::agents::SipTarget::None))
            .await
            .unwrap();
        let id = store
            .insert_offered_call(&OfferedCall {
                sip_call_id: "turns-1".into(),
                caller_raw: "+14155550010".into(),
                caller_e164: Some("+14155550010".into()),
                dialed: "8005550100".into(),
                customer_id: None,
                offered_at: 3_000_000,
            })
            .await
            .unwrap();
        let turns = [(a.id, 0, 12_400), (b.id, 14_000, 75_900)];
        store.set_call_agents(id, &turns).await.unwrap();
        // Written again after a crash: nothing doubles.
        store.set_call_agents(id, &turns).await.unwrap();
        let log = store.contact_log(id).await.unwrap().expect("the log");
        let got: Vec<(i64, i64)> = log
            .agents
            .iter()
            .map(|t| (t.agent_id, t.talk_secs))
            .collect();
        assert_eq!(got, [(a.id, 12), (b.id, 61)]);
    }
);

/// A birthday campaign's spec as the API would save it.
fn birthday_spec(name: &str) -> String {
    serde_json::json!({
        "name": name, "kind": "birthday", "channel": "sms", "template": "Happy birthday, {name}!",
        "schedule": {"repeat": "daily", "at": "09:00", "tz": "Asia/Shanghai"}
    })
    .to_string()
}

// (Short: the PostgreSQL schema is named after the test, within 63 characters.)
on_both!(
    campaign_attempts_once_per_occasion,
    |store: Store| async move {
        use screenpop::campaigns::{run, spec::Checked};
        use screenpop::store::campaigns::CampaignState;
        let mut vip = customer("Birthday VIP", Tier::Vip, &["+1 415 555 0101"]);
        vip.birthday = Some("1980-12-02".into());
        vip.opt_out_voice = false;
        vip.tags = vec!["fair".into(), " fair ".into(), "beijing".into()];
        let vip = store
            .create_customer(&vip, CreatedVia::Api, region("US").unwrap())
            .await
            .unwrap();
        assert_eq!(vip.tags, ["beijing", "fair"]);
        let mut regular = customer("Birthday Regular", Tier::Regular, &["+86 138 0013 8000"]);
        regular.birthday = Some("1990-12-02".into());
        let regular = store
            .create_customer(&regular, CreatedVia::Api, region("US").unwrap())
            .await
            .unwrap();
        let mut other = customer("Other Day", Tier::Vip, &["+1 415 555 0102"]);
        other.birthday = Some("1990-06-01".into());
        store
            .create_customer(&other, CreatedVia::Api, region("US").unwrap())
            .await
            .unwrap();

        let base = std::path::Path::new(".");
        let a = store
            .create_campaign(
                "Birthdays",
                "birthday",
                "sms",
                &birthday_spec("Birthdays"),
                "test",
            )
            .await
            .unwrap();
        let dup = store
            .create_campaign(
                "Birthdays",
                "birthday",
                "sms",
                &birthday_spec("Birthdays"),
                "test",
            )
            .await;
        assert!(
            matches!(dup, Err(StoreError::Invalid { field: "name", .. })),
            "{dup:?}"
        );
        let b = store
            .create_campaign(
                "Birthdays 2",
                "birthday",
                "sms",
                &birthday_spec("Birthdays 2"),
                "test",
            )
            .await
            .unwrap();
        let ca = Checked::load(&a.spec, base).unwrap();
        let cb = Checked::load(&b.spec, base).unwrap();
        let day: jiff::civil::Date = "2026-12-02".parse().unwrap();
        let now = 1_000;
        // Two runs at once, and a second campaign of the kind: each customer once.
        let (x, y) = tokio::join!(
            run::record(&store, &ca, a.id, day, now),
            run::record(&store, &ca, a.id, day, now)
        );
        assert_eq!(x.unwrap() + y.unwrap(), 2);
        assert_eq!(run::record(&store, &cb, b.id, day, now).await.unwrap(), 0);
        assert_eq!(run::record(&store, &ca, a.id, day, now).await.unwrap(), 0);
        // Next year is another occasion.
        let next_year: jiff::civil::Date = "2027-12-02".parse().unwrap();
        assert_eq!(
            run::record(&store, &ca, a.id, next_year, now)
                .await
                .unwrap(),
            2
        );

        // Two senders claim disjoint attempts; a dead sender's claims come back.
        let (c1, c2) = tokio::join!(
            store.claim_attempts(a.id, "node-1", now, 3),
            store.claim_attempts(a.id, "node-2", now, 3)
        );
        let (c1, c2) = (c1.unwrap(), c2.unwrap());
        assert_eq!(c1.len() + c2.len(), 4);
        assert!(c1.iter().all(|x| c2.iter().all(|y| x.id != y.id)));
        assert_eq!(
            store.release_attempt_claims("node-1", 0).await.unwrap(),
            c1.len() as u64
        );
        let p = store.campaign_progress(a.id).await.unwrap();
        assert_eq!((p.pending, p.sending), (c1.len() as i64, c2.len() as i64));

        // A try's result, its contact log and a delivery receipt by message id.
        let t = &c2[0];
        let log = store
            .insert_try_log(&screenpop::store::campaigns::TryLog {
                key: format!("sms-{}", t.id),
                campaign_id: a.id,
                customer_id: t.customer_id,
                number: t.number.clone(),
                via: t.channel,
                started_at: now,
                answered_at: None,
                ended_at: now + 50,
                result: "sent".into(),
                body: Some(t.body.clone()),
            })
            .await
            .unwrap();
        // Only the sender holding the claim stores a result.
        assert!(!store
            .finish_attempt_try("node-1", t.id, "sent", None, t.channel, None, None, None)
            .await
            .unwrap());
        assert!(store
            .finish_attempt_try(
                "node-2",
                t.id,
                "sent",
                None,
                t.channel,
                None,
                Some("msg-1"),
                Some(log)
            )
            .await
            .unwrap());
        let r = store
            .attempt_receipt("msg-1", "delivered", None)
            .await
            .unwrap();
        assert_eq!(r.map(|a| a.status), Some("delivered".to_string()));
        let l = store.contact_log(log).await.unwrap().unwrap();
        assert_eq!(
            (
                l.channel.as_deref(),
                l.result.as_deref(),
                l.campaign_id,
                l.direction.as_str()
            ),
            (Some("sms"), Some("delivered"), Some(a.id), "outbound")
        );
        assert!(store
            .attempt_receipt("msg-unknown", "delivered", None)
            .await
            .unwrap()
            .is_none());

        // Pausing is conditional on the state.
        assert!(!store
            .set_campaign_state(a.id, &[CampaignState::Active], CampaignState::Paused, None)
            .await
            .unwrap());
        assert!(store.run_campaign_now(a.id, now).await.unwrap());
        assert!(store
            .set_campaign_state(a.id, &[CampaignState::Active], CampaignState::Paused, None)
            .await
            .unwrap());
        assert!(!store.run_campaign_now(a.id, now).await.unwrap());
        // A greeting not sent by the end of its day is not sent late.
        let late = store
            .claim_attempts(a.id, "node-3", 4_000_000_000_000, 10)
            .await
            .unwrap();
        assert!(late.is_empty(), "{late:?}");
        let p = store.campaign_progress(a.id).await.unwrap();
        assert_eq!(p.pending, 0, "{p:?}");
        let skipped = store
            .campaign_attempts(a.id, Some("skipped"), 0, 10)
            .await
            .unwrap();
        assert!(!skipped.is_empty());
        assert!(skipped
            .iter()
            .all(|x| x.reason.as_deref() == Some("its day passed before it could be sent")));

        // Audience filters: tier, tag, region, saved list, and an SMS opt-out by number.
        use screenpop::campaigns::spec::Audience;
        let ids = |a: Audience| {
            let store = store.clone();
            async move {
                store
                    .campaign_candidates(&a, None, 0, 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.customer_id)
                    .collect::<Vec<_>>()
            }
        };
        let vips = ids(Audience {
            tiers: vec![Tier::Vip],
            ..Audience::default()
        })
        .await;
        assert_eq!(vips.len(), 2);
        assert_eq!(
            ids(Audience {
                tags: vec!["fair".into()],
                ..Audience::default()
            })
            .await,
            [vip.id]
        );
        assert_eq!(
            ids(Audience {
                region: Some("+86".into()),
                ..Audience::default()
            })
            .await,
            [regular.id]
        );
        assert_eq!(
            ids(Audience {
                customer_ids: vec![regular.id],
                ..Audience::default()
            })
            .await,
            [regular.id]
        );
        let out = store
            .opt_out_number("+8613800138000", screenpop::campaigns::plan::Via::Sms)
            .await
            .unwrap();
        assert_eq!(out, [regular.id]);
        assert!(
            store
                .customer(regular.id)
                .await
                .unwrap()
                .unwrap()
                .opt_out_sms
        );
    }
);

on_both!(
    survey_settings_and_scores_per_queue_and_agent,
    |store: Store| async move {
        use screenpop::store::agents::{NewQueue, QueuePatch, SipTarget};
        use screenpop::store::calls::*;
        // A prompt the server can play (a short 8 kHz tone).
        // One folder per run (SQLite and PostgreSQL run at once in this process).
        let dir = std::env::temp_dir().join(format!(
            "sp-survey-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let prompt = dir.join("prompt.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&prompt, spec).unwrap();
        for i in 0..4000 {
            w.write_sample(((i as f64 * 0.6).sin() * 8000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
        let prompt = prompt.display().to_string();
        let nq = |name: &str, prompt: Option<String>, thanks: Option<String>, wait: i64| NewQueue {
            name: name.into(),
            dialed_numbers: vec![],
            ring_timeout_secs: 20,
            max_wait_secs: 60,
            wrap_up_secs: 5,
            required_skills: vec![],
            is_default: false,
            service_level_secs: 20,
            active: true,
            crm_url: None,
            music: None,
            survey_prompt: prompt,
            survey_thanks: thanks,
            survey_timeout_secs: wait,
            keep_recordings_days: None,
        };
        // Refusals name the field: a file that does not play, a wait out of range, a thanks
        // without a prompt.
        for (q, field) in [
            (
                nq("a", Some("/nonexistent.wav".into()), None, 8),
                "survey_prompt",
            ),
            (
                nq(
                    "b",
                    Some(prompt.clone()),
                    Some("/nonexistent.wav".into()),
                    8,
                ),
                "survey_thanks",
            ),
            (
                nq("c", Some(prompt.clone()), None, 0),
                "survey_timeout_secs",
            ),
            (
                nq("d", Some(prompt.clone()), None, 61),
                "survey_timeout_secs",
            ),
            (nq("e", None, Some(prompt.clone()), 8), "survey_thanks"),
        ] {
            match store.create_queue(&q).await {
                Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let care = store
            .create_queue(&nq("care", Some(prompt.clone()), Some(prompt.clone()), 5))
            .await
            .unwrap();
        assert_eq!(
            (care.survey_prompt.as_deref(), care.survey_timeout_secs),
            (Some(prompt.as_str()), 5)
        );
        let plain = store
            .create_queue(&nq("plain", None, None, 8))
            .await
            .unwrap();
        let alice = store
            .create_agent(&agent("alice", SipTarget::None))
            .await
            .unwrap();
        let bob = store
            .create_agent(&agent("bob", SipTarget::None))
            .await
            .unwrap();
        // Alice: rated 4 and 9, one caller who pressed nothing; Bob: rated 2, one call without
        // a survey (another queue).
        let t0 = 5_000_000i64;
        for (i, (who, queue, survey, score)) in [
            (alice.id, care.id, true, Some(4)),
            (alice.id, care.id, true, Some(9)),
            (alice.id, care.id, true, None),
            (bob.id, care.id, true, Some(2)),
            (bob.id, plain.id, false, None),
        ]
        .into_iter()
        .enumerate()
        {
            let offered = t0 + i as i64 * 100_000;
            let id = store
                .insert_offered_call(&OfferedCall {
                    sip_call_id: format!("survey-{i}"),
                    caller_raw: "+14155550001".into(),
                    caller_e164: Some("+14155550001".into()),
                    dialed: "8005550100".into(),
                    customer_id: None,
                    offered_at: offered,
                })
                .await
                .unwrap();
            store
                .finish_call(
                    id,
                    &EndedCall {
                        agent_id: Some(who),
                        queue_id: Some(queue),
                        answered_at: Some(offered + 2_000),
                        ended_at: offered + 40_000,
                        disposition: CallDisposition::Answered,
                        recording_id: None,
                        survey_offered_at: survey.then_some(offered + 32_000),
                        survey_score: score,
                        recording_failed: false,
                    },
                )
                .await
                .unwrap();
            let log = store.contact_log(id).await.unwrap().unwrap();
            assert_eq!(log.survey_score, score);
            assert_eq!(log.survey_offered_at, survey.then_some(offered + 32_000));
            // Talk time stops where the survey began.
            assert_eq!(log.talk_secs, Some(if survey { 30 } else { 38 }));
        }
        let queues = store.queue_stats_since(t0).await.unwrap();
        let q = |id: i64| queues.iter().find(|d| d.queue_id == id).unwrap().surveys;
        assert_eq!(
            q(care.id),
            SurveyDay {
                offered: 4,
                scored: 3,
                score_total: 15
            }
        );
        assert_eq!(q(care.id).average(), Some(5.0));
        assert_eq!(q(plain.id), SurveyDay::default());
        assert_eq!(q(plain.id).average(), None);
        let agents = store.agent_stats_since(t0).await.unwrap();
        let a = |id: i64| agents.iter().find(|d| d.agent_id == id).unwrap().clone();
        assert_eq!(
            (a(alice.id).surveys.offered, a(alice.id).surveys.scored),
            (3, 2)
        );
        assert_eq!(a(alice.id).surveys.average(), Some(6.5));
        assert_eq!(a(bob.id).surveys.average(), Some(2.0));
        assert_eq!(a(bob.id).talk_secs, 30 + 38);
        // "" takes the survey away; the thanks goes with it only when asked.
        let off = QueuePatch {
            survey_prompt: Some(String::new()),
            survey_thanks: Some(String::new()),
            ..QueuePatch::default()
        };
        let care = store.update_queue(care.id, &off).await.unwrap();
        assert_eq!((care.survey_prompt, care.survey_thanks), (None, None));
        let _ = std::fs::remove_dir_all(&dir);
    }
);

on_both!(retention_on_a_fake_clock, |store: Store| async move {
    use screenpop::store::agents::{NewQueue, QueuePatch};
    use screenpop::store::calls::*;
    const DAY: i64 = 86_400_000;
    const FIRST: (i64, i64) = (i64::MIN, i64::MIN);
    let nq = |name: &str, keep: Option<i64>| NewQueue {
        keep_recordings_days: keep,
        ..NewQueue {
            name: name.into(),
            ..NewQueue::general()
        }
    };
    let mut short = nq("short", Some(30));
    short.is_default = false;
    let short = store.create_queue(&short).await.unwrap();
    let mut long = nq("long", Some(365));
    long.is_default = false;
    let long = store.create_queue(&long).await.unwrap();
    let mut plain = nq("plain", None);
    plain.is_default = false;
    let plain = store.create_queue(&plain).await.unwrap();
    // Out of range is refused, naming the field; 0 goes back to the profile's days.
    let e = store
        .update_queue(
            long.id,
            &QueuePatch {
                keep_recordings_days: Some(-3),
                ..QueuePatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("keep_recordings_days"), "{e}");
    let now = 1_000 * DAY;
    // (queue, age in days) per recorded call.
    let calls = [
        (short.id, 31), // past 30 days: goes
        (short.id, 29), // kept
        (long.id, 364), // kept
        (long.id, 400), // goes
        (plain.id, 91), // the profile's 90: goes
        (plain.id, 89), // kept
    ];
    let mut recs = Vec::new();
    for (i, (queue, age)) in calls.iter().enumerate() {
        let created = now - age * DAY;
        let id = store
            .insert_offered_call(&OfferedCall {
                sip_call_id: format!("ret-{i}"),
                caller_raw: "+14155550001".into(),
                caller_e164: Some("+14155550001".into()),
                dialed: "8005550100".into(),
                customer_id: None,
                offered_at: created,
            })
            .await
            .unwrap();
        let rec = store
            .insert_recording(&NewRecording {
                path: format!("recordings/ret-{i}.wav"),
                duration_ms: 1000,
                size_bytes: 8044,
                sha256: format!("{i:064}"),
            })
            .await
            .unwrap();
        sqlx::query("UPDATE recordings SET created_at = $1 WHERE id = $2")
            .bind(created)
            .bind(rec)
            .execute(store.pool())
            .await
            .unwrap();
        store
            .finish_call(
                id,
                &EndedCall {
                    agent_id: None,
                    queue_id: Some(*queue),
                    answered_at: Some(created + 1000),
                    ended_at: created + 60_000,
                    disposition: CallDisposition::Answered,
                    recording_id: Some(rec),
                    survey_offered_at: None,
                    survey_score: None,
                    recording_failed: false,
                },
            )
            .await
            .unwrap();
        recs.push((id, rec));
    }
    let due = store
        .expiring_recordings(now, 90, FIRST, 100)
        .await
        .unwrap();
    let ids: Vec<i64> = due.iter().map(|r| r.id).collect();
    // Oldest first: the 400-day one, then 91, then 31.
    assert_eq!(ids, [recs[3].1, recs[4].1, recs[0].1], "{due:?}");
    assert_eq!(
        due.iter()
            .map(|r| (r.queue.as_deref(), r.days))
            .collect::<Vec<_>>(),
        [
            (Some("long"), 365),
            (Some("plain"), 90),
            (Some("short"), 30)
        ]
    );
    assert_eq!(due[0].call_id, Some(recs[3].0));
    // Keeping for ever by default: the queues with days of their own still expire.
    let ids: Vec<i64> = store
        .expiring_recordings(now, 0, FIRST, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [recs[3].1, recs[0].1]);
    // Kept N days means gone at exactly N days: a millisecond short of a day later
    // nothing more goes, a day later every one whose age reached its days.
    let later = |at: i64| {
        let store = store.clone();
        async move {
            store
                .expiring_recordings(at, 90, FIRST, 100)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        later(now + DAY - 1).await,
        [recs[3].1, recs[4].1, recs[0].1]
    );
    assert_eq!(
        later(now + DAY).await,
        [recs[3].1, recs[2].1, recs[4].1, recs[5].1, recs[0].1, recs[1].1]
    );

    // Pages: after the first of them, the rest.
    let after = (due[0].created_at, due[0].id);
    let ids: Vec<i64> = store
        .expiring_recordings(now, 90, after, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [recs[4].1, recs[0].1]);

    // One node of several wins each removal; a failed removal gives it back; one being
    // removed is not listed to the others.
    assert!(store.claim_expiry(recs[3].1).await.unwrap());
    assert!(!store.claim_expiry(recs[3].1).await.unwrap());
    let listed: Vec<i64> = store
        .expiring_recordings(now, 90, FIRST, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, [recs[4].1, recs[0].1], "claimed: not listed");
    store.unclaim_expiry(recs[3].1).await.unwrap();
    assert!(store.claim_expiry(recs[3].1).await.unwrap());
    store
        .recording_expired(recs[3].1, None, ("recording.expire", "deleted"))
        .await
        .unwrap();
    assert!(store.claim_expiry(recs[4].1).await.unwrap());
    store
        .recording_expired(
            recs[4].1,
            Some("/archive/ret-4.wav"),
            ("recording.archive", "moved"),
        )
        .await
        .unwrap();
    assert!(
        !store.claim_expiry(recs[3].1).await.unwrap(),
        "expired: no claim"
    );
    let r = store.recording(recs[3].1).await.unwrap().unwrap();
    assert!(r.expired_at.is_some() && r.archived_to.is_none(), "{r:?}");
    let r = store.recording(recs[4].1).await.unwrap().unwrap();
    assert_eq!(r.archived_to.as_deref(), Some("/archive/ret-4.wav"));
    // Each removal audited with the rest.
    let audit = store
        .audit_entries(Some("recording."), None, 10)
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.subject.as_str()))
        .collect();
    let (s3, s4) = (
        format!("recording:{}", recs[3].1),
        format!("recording:{}", recs[4].1),
    );
    assert_eq!(
        seen,
        [
            ("retention", "recording.archive", s4.as_str()),
            ("retention", "recording.expire", s3.as_str())
        ]
    );

    // The contact logs stay, saying what became of the audio.
    let status = |i: usize| {
        let store = store.clone();
        let id = recs[i].0;
        async move {
            let l = store.contact_log(id).await.unwrap().unwrap();
            (l.recording_id, l.recording_status)
        }
    };
    assert_eq!(status(3).await, (Some(recs[3].1), Some("expired".into())));
    assert_eq!(status(4).await, (Some(recs[4].1), Some("archived".into())));
    assert_eq!(status(0).await, (Some(recs[0].1), None));
    let ids: Vec<i64> = store
        .expiring_recordings(now, 90, FIRST, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [recs[0].1], "expired ones are not listed again");

    // A recording the disk refused: the contact log says so.
    let id = store
        .insert_offered_call(&OfferedCall {
            sip_call_id: "ret-full".into(),
            caller_raw: "+14155550002".into(),
            caller_e164: Some("+14155550002".into()),
            dialed: "8005550100".into(),
            customer_id: None,
            offered_at: now,
        })
        .await
        .unwrap();
    store
        .finish_call(
            id,
            &EndedCall {
                agent_id: None,
                queue_id: Some(plain.id),
                answered_at: Some(now + 1000),
                ended_at: now + 5000,
                disposition: CallDisposition::Answered,
                recording_id: None,
                survey_offered_at: None,
                survey_score: None,
                recording_failed: true,
            },
        )
        .await
        .unwrap();
    let l = store.contact_log(id).await.unwrap().unwrap();
    assert_eq!(l.recording_status.as_deref(), Some("failed"));
    // Completed again at a restart (the `.part` repaired): it still says failed.
    store
        .finish_call(
            id,
            &EndedCall {
                agent_id: None,
                queue_id: Some(plain.id),
                answered_at: Some(now + 1000),
                ended_at: now + 5000,
                disposition: CallDisposition::Answered,
                recording_id: None,
                survey_offered_at: None,
                survey_score: None,
                recording_failed: false,
            },
        )
        .await
        .unwrap();
    let l = store.contact_log(id).await.unwrap().unwrap();
    assert_eq!(l.recording_status.as_deref(), Some("failed"));
});

/// A customer's contacts newest first (the pop's last contacts: `offered_at DESC, id DESC`) are
/// read in `calls_customer`'s own order on PostgreSQL, even by a plan made on a new database
/// that knows nothing of the table: the read stops after the rows it shows. With the index on
/// `(customer_id, offered_at)` alone that plan sorted all of the customer's calls on every pop.
#[tokio::test]
async fn postgres_reads_a_customers_last_contacts_without_sorting_them() {
    let (store, schema) = postgres_store("last_contacts_plan").await;
    let mut conn = store.pool().acquire().await.unwrap();
    for statement in [
        "SET plan_cache_mode = force_generic_plan",
        "PREPARE last_contacts (BIGINT) AS SELECT id FROM calls WHERE customer_id = $1 \
         ORDER BY offered_at DESC, id DESC LIMIT 5",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE last_contacts(1)")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("calls_customer"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    drop(conn);
    pg_schema::drop(&pg_schema::base_url(), &schema)
        .await
        .expect("drop schema");
}
