//! Customers seeded in bulk SQL for the benches (`#[path]`-included by each).

use std::time::Instant;

/// Seeds `n` customers with one phone each (+1 415 2000001 …) in bulk SQL.
pub async fn seed(store: &screenpop::store::Store, n: u64) {
    use screenpop::store::Backend;
    let started = Instant::now();
    let customers = match store.backend() {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO customers (code, name, tier, created_via, created_at, updated_at) \
             SELECT 'B' || i, 'Customer ' || i, CASE WHEN i % 10 = 0 THEN 'vip' ELSE 'regular' END, \
             'import', 0, 0 FROM n"
        ),
        Backend::Postgres => format!(
            "INSERT INTO customers (code, name, tier, created_via, created_at, updated_at) \
             SELECT 'B' || i, 'Customer ' || i, CASE WHEN i % 10 = 0 THEN 'vip' ELSE 'regular' END, \
             'import', 0, 0 FROM generate_series(1, {n}) AS i"
        ),
    };
    sqlx::query(sqlx::AssertSqlSafe(customers))
        .execute(store.pool())
        .await
        .expect("seed customers");
    sqlx::query(
        "INSERT INTO customer_phones (customer_id, raw, e164, national, label) \
         SELECT id, '+1415' || (2000000 + id), '+1415' || (2000000 + id), '415' || (2000000 + id), 'mobile' \
         FROM customers",
    )
    .execute(store.pool())
    .await
    .expect("seed phones");
    let analyze = match store.backend() {
        Backend::Sqlite => "ANALYZE",
        Backend::Postgres => "ANALYZE customers, customer_phones",
    };
    sqlx::query(analyze)
        .execute(store.pool())
        .await
        .expect("analyze");
    eprintln!(
        "seeded {n} customers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
