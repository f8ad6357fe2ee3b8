//! A row's columns read by name, from a database row or from the same row as a JSON object.
//!
//! The screen-pop's read on PostgreSQL ([`super::card`]) brings a customer's phones, tags,
//! contacts and work orders back as JSON inside the candidates' rows: one statement on one
//! connection instead of five on four, in two round trips. The row mappers
//! (`customer_of`, `log_of`, …) read through this trait, so a contact log is the same value
//! whichever way it came.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, Decode, Row, Type};

/// What a row mapper reads a column with.
pub(crate) trait Columns {
    /// The column `name`, decoded as `T`; a missing column or a value of another type is an
    /// error, as sqlx's `try_get` has it.
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Any> + Type<Any> + DeserializeOwned;
}

impl Columns for AnyRow {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Any> + Type<Any> + DeserializeOwned,
    {
        self.try_get(name)
    }
}

/// A row as PostgreSQL's `json_agg` writes it: an object of column name to value.
impl Columns for Map<String, Value> {
    fn col<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Any> + Type<Any> + DeserializeOwned,
    {
        let v = self
            .get(name)
            .ok_or_else(|| sqlx::Error::ColumnNotFound(name.to_string()))?;
        T::deserialize(v).map_err(|e| sqlx::Error::ColumnDecode {
            index: name.to_string(),
            source: Box::new(e),
        })
    }
}

/// A `json_agg(…)::text` column read as a list of `T` (empty for SQL NULL).
pub(crate) fn json_column<T: DeserializeOwned>(
    row: &AnyRow,
    name: &str,
) -> Result<Vec<T>, sqlx::Error> {
    let Some(text) = row.try_get::<Option<String>, _>(name)? else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: name.to_string(),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn a_json_row_reads_like_a_database_row() {
        let r = row(
            serde_json::json!({"id": 7, "notes": null, "name": "张伟", "at": 1700000000000i64}),
        );
        assert_eq!(r.col::<i64>("id").unwrap(), 7);
        assert_eq!(r.col::<Option<String>>("notes").unwrap(), None);
        assert_eq!(r.col::<String>("name").unwrap(), "张伟");
        assert_eq!(r.col::<Option<i64>>("at").unwrap(), Some(1_700_000_000_000));
    }

    #[test]
    fn a_missing_column_or_a_wrong_type_is_an_error_naming_the_column() {
        let r = row(serde_json::json!({"id": "seven"}));
        let e = r.col::<i64>("id").unwrap_err();
        assert!(
            matches!(&e, sqlx::Error::ColumnDecode { index, .. } if index == "id"),
            "{e}"
        );
        let e = r.col::<i64>("gone").unwrap_err();
        assert!(
            matches!(&e, sqlx::Error::ColumnNotFound(c) if c == "gone"),
            "{e}"
        );
    }
}
