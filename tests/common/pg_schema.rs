//! A schema of its own on the test PostgreSQL for each test that needs one, so concurrent tests
//! and earlier runs on the same server never meet.

use sqlx::Connection;

/// PostgreSQL cuts identifiers at 63 bytes (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

/// The test PostgreSQL over TCP: `SCREENPOP_TEST_POSTGRES`, else this machine's `test` database.
pub fn base_url() -> String {
    std::env::var("SCREENPOP_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A schema's name that no other run will choose: the random and process parts come first because
/// PostgreSQL cuts longer names silently. With the test's name first, a long name lost its unique
/// tail and collided with a schema an earlier CI run on the same server had left.
pub fn unique_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!(
        "sp_{:08x}_{}_{tag}",
        rand::random::<u32>(),
        std::process::id()
    );
    name.truncate(MAX_IDENT);
    name
}

/// Runs one statement on its own connection (a store's pool would open several for it).
async fn execute(base_url: &str, sql: String) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(base_url)
        .await
        .map_err(|e| format!("PostgreSQL at {base_url} is required: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// A new schema on the server at `base_url`, and the URL whose search_path is that schema.
pub async fn create(base_url: &str, tag: &str) -> (String, String) {
    let schema = unique_name(tag);
    execute(base_url, format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap_or_else(|e| panic!("create schema {schema}: {e}"));
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}options=-c%20search_path%3D{schema}");
    (url, schema)
}

/// Drops a schema `create` made, with everything in it. Called when a test passed (a failed
/// one's schema stays for a look) and at the end of a bench.
pub async fn drop(base_url: &str, schema: &str) -> Result<(), String> {
    if !schema.starts_with("sp_")
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!("{schema:?} is not a name create made"));
    }
    execute(
        base_url,
        format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
    )
    .await
    .map_err(|e| format!("drop schema {schema}: {e}"))
}

#[test]
fn names_keep_their_unique_part_within_postgres_limit() {
    let long = "contact_logs_filter_by_date_agent_number_and_disposition";
    let (a, b) = (unique_name(long), unique_name(long));
    assert!(a.len() <= MAX_IDENT, "{a}");
    assert_ne!(a, b, "two schemas for one test name must differ");
    assert!(a.starts_with("sp_"), "{a}");
    assert!(unique_name("Camp-1").ends_with("_camp_1"));
}
