//! One sealed constant per encryption key id, to prove at start that the key
//! ring still opens what it wrote.

use crate::db::schema::key_checks;
use crate::db::DbConn;
use chrono::NaiveDateTime;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = key_checks)]
pub struct KeyCheck {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub created_at: NaiveDateTime,
}

impl KeyCheck {
    pub fn all(conn: &mut DbConn) -> QueryResult<Vec<KeyCheck>> {
        key_checks::table
            .order(key_checks::key_id.asc())
            .select(KeyCheck::as_select())
            .load(conn)
    }
}
