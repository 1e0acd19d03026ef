//! Rolling upgrades (issue 18, point 6): migrations only expand, so the
//! previous release keeps working against the new schema while instances
//! are replaced one by one. Checked mechanically, on both backends, for every
//! migration the binary embeds (new ones included, without naming them):
//! applied one at a time, no step drops a table or a column, changes a
//! column's type or makes it NOT NULL, or adds to an existing table a NOT
//! NULL column without a default; and the previous release's INSERT and
//! SELECT of every table it knew (its columns, generated from the schema
//! before the latest migration) still run against the latest schema.

use crate::backend_tests;
use crate::helpers::{Backend, TestDb};
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::sqlite::Sqlite;
use diesel_migrations::MigrationHarness;
use std::collections::BTreeMap;

backend_tests!(
    every_migration_only_expands_and_the_previous_releases_queries_still_run,
    the_relay_migration_gives_rows_stored_before_their_parent_account,
    the_scopes_migration_keeps_each_keys_rights,
);

/// Steps that break the rule, knowingly: (migration, table, column, why).
/// None so far; an entry must say why the previous release is unaffected
/// (e.g. it never read the column), and the README's Upgrading section
/// names it.
const ALLOWED: &[(&str, &str, &str, &str)] = &[];

/// Values the schema's CHECK constraints accept, for the generated INSERTs.
const CHECKED: &[(&str, &str, &str)] = &[
    ("users", "role", "admin"),
    ("connections", "status", "connected"),
    ("connection_usage", "kind", "token"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    ty: String,
    nullable: bool,
    has_default: bool,
}

/// Table -> column -> what it is.
type Schema = BTreeMap<String, BTreeMap<String, Column>>;

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
    #[diesel(sql_type = Bool)]
    has_default: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

const SQLITE_COLUMNS: &str = r#"
SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type,
       (p."notnull" = 0 AND p.pk = 0) AS nullable, (p.dflt_value IS NOT NULL) AS has_default
FROM sqlite_master m JOIN pragma_table_info(m.name) p
WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
  AND m.name <> '__diesel_schema_migrations'"#;

const POSTGRES_COLUMNS: &str = r#"
SELECT c.table_name::text AS table_name, c.column_name::text AS column_name,
       c.data_type::text AS data_type, (c.is_nullable = 'YES') AS nullable,
       (c.column_default IS NOT NULL) AS has_default
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
  AND c.table_name <> '__diesel_schema_migrations'"#;

/// A connection of the test's own, outside Tether's pool: migrations are
/// applied one at a time, and raw SQL is what is being checked.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Raw {
    fn open(db: &TestDb, backend: Backend) -> Raw {
        match backend {
            Backend::Sqlite => {
                let path = db.url.trim_start_matches("sqlite://");
                let mut c = SqliteConnection::establish(path).unwrap();
                // As Tether's connections do: foreign keys are enforced.
                diesel::sql_query("PRAGMA foreign_keys = ON")
                    .execute(&mut c)
                    .unwrap();
                Raw::Sqlite(c)
            }
            Backend::Postgres => Raw::Postgres(db.raw_pg()),
        }
    }

    /// The embedded migrations' names, in the order they apply.
    fn migrations(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Raw::Sqlite(_) => MigrationSource::<Sqlite>::migrations(&tether::db::SQLITE_MIGRATIONS)
                .unwrap()
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
            Raw::Postgres(_) => MigrationSource::<Pg>::migrations(&tether::db::POSTGRES_MIGRATIONS)
                .unwrap()
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
        };
        names.sort();
        names
    }

    /// Applies the migration called `name`.
    fn apply(&mut self, name: &str) {
        fn one<DB: diesel::backend::Backend>(
            list: Vec<Box<dyn Migration<DB>>>,
            name: &str,
            run: impl FnOnce(&dyn Migration<DB>) -> diesel::migration::Result<()>,
        ) {
            let m = list
                .iter()
                .find(|m| m.name().to_string() == name)
                .unwrap_or_else(|| panic!("no migration {name}"));
            run(&**m).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        match self {
            // `applied_migrations` creates diesel's bookkeeping table first.
            Raw::Sqlite(c) => one(
                MigrationSource::<Sqlite>::migrations(&tether::db::SQLITE_MIGRATIONS).unwrap(),
                name,
                |m| {
                    c.applied_migrations()?;
                    c.run_migration(m).map(|_| ())
                },
            ),
            Raw::Postgres(c) => one(
                MigrationSource::<Pg>::migrations(&tether::db::POSTGRES_MIGRATIONS).unwrap(),
                name,
                |m| {
                    c.applied_migrations()?;
                    c.run_migration(m).map(|_| ())
                },
            ),
        }
    }

    fn schema(&mut self) -> Schema {
        let rows: Vec<ColumnRow> = match self {
            Raw::Sqlite(c) => diesel::sql_query(SQLITE_COLUMNS).load(c).unwrap(),
            Raw::Postgres(c) => diesel::sql_query(POSTGRES_COLUMNS).load(c).unwrap(),
        };
        let mut schema = Schema::new();
        for r in rows {
            schema.entry(r.table_name).or_default().insert(
                r.column_name,
                Column {
                    ty: r.data_type.to_ascii_lowercase(),
                    nullable: r.nullable,
                    has_default: r.has_default,
                },
            );
        }
        schema
    }

    fn execute(&mut self, sql: &str) -> Result<usize, String> {
        match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).execute(c),
            Raw::Postgres(c) => diesel::sql_query(sql).execute(c),
        }
        .map_err(|e| format!("{sql}: {e}"))
    }

    fn count(&mut self, sql: &str) -> Result<i64, String> {
        match self {
            Raw::Sqlite(c) => diesel::sql_query(sql).get_result::<Count>(c),
            Raw::Postgres(c) => diesel::sql_query(sql).get_result::<Count>(c),
        }
        .map(|c| c.n)
        .map_err(|e| format!("{sql}: {e}"))
    }

    /// A literal of `column`'s type that its constraints accept. Every id
    /// is the same, so that a row's references find the rows of the tables
    /// they point to (inserted first).
    fn literal(&self, table: &str, name: &str, column: &Column) -> String {
        let ty = column.ty.as_str();
        if let Some((_, _, v)) = CHECKED.iter().find(|(t, c, _)| *t == table && *c == name) {
            format!("'{v}'")
        } else if ty.contains("int") {
            "1".into()
        } else if ty.contains("bool") {
            "FALSE".into()
        } else if ty.contains("timestamp") {
            "'2026-12-01 00:00:00'".into()
        } else if ty == "date" {
            "'2026-12-01'".into()
        } else if ty.contains("bytea") {
            "decode('00', 'hex')".into()
        } else if ty.contains("blob") || ty.contains("binary") {
            "X'00'".into()
        } else {
            "'upgrade-test'".into()
        }
    }
}

/// What is wrong with going from `before` to `after`, one line each.
fn contractions(before: &Schema, after: &Schema) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (table, columns) in before {
        let Some(now) = after.get(table) else {
            found.push((table.clone(), String::new(), "table dropped".into()));
            continue;
        };
        for (name, was) in columns {
            match now.get(name) {
                None => found.push((table.clone(), name.clone(), "column dropped".into())),
                Some(is) if is.ty != was.ty => found.push((
                    table.clone(),
                    name.clone(),
                    format!("type changed from {} to {}", was.ty, is.ty),
                )),
                Some(is) if was.nullable && !is.nullable => {
                    found.push((table.clone(), name.clone(), "made NOT NULL".into()))
                }
                Some(_) => {}
            }
        }
        for (name, is) in now {
            if !columns.contains_key(name) && !is.nullable && !is.has_default {
                found.push((
                    table.clone(),
                    name.clone(),
                    "added NOT NULL without a default: the previous release's INSERTs lack it"
                        .into(),
                ));
            }
        }
    }
    found
}

async fn every_migration_only_expands_and_the_previous_releases_queries_still_run(
    backend: Backend,
) {
    let db = TestDb::new(backend);
    let mut raw = Raw::open(&db, backend);
    let names = raw.migrations();
    assert!(names.len() >= 2, "{names:?}");

    let mut schemas = Vec::new();
    let mut violations = Vec::new();
    let mut allowed_used = vec![false; ALLOWED.len()];
    for name in &names {
        raw.apply(name);
        let schema = raw.schema();
        if let Some(before) = schemas.last() {
            for (table, column, why) in contractions(before, &schema) {
                match ALLOWED.iter().position(|a| {
                    (a.0, a.1, a.2) == (name.as_str(), table.as_str(), column.as_str())
                }) {
                    Some(i) => allowed_used[i] = true,
                    None => violations.push(format!("{name}: {table}.{column}: {why}")),
                }
            }
        }
        schemas.push(schema);
    }
    assert!(
        violations.is_empty(),
        "migrations must only expand (README, Upgrading):\n{}",
        violations.join("\n")
    );
    assert!(
        allowed_used.iter().all(|u| *u),
        "an ALLOWED entry no migration needs: remove it"
    );

    // The previous release: the schema before the latest migration. Its
    // INSERT of every table it knew, naming only its columns, then its
    // SELECT of them, against the latest schema.
    let previous = &schemas[schemas.len() - 2];
    let mut left: Vec<&String> = previous.keys().collect();
    let mut errors = Vec::new();
    // Rows that reference others go in once those exist: as many passes as
    // it takes, stopping when one inserts nothing.
    while !left.is_empty() {
        errors.clear();
        let before = left.len();
        left.retain(|table| {
            let columns = &previous[*table];
            let names: Vec<String> = columns.keys().map(|c| format!("\"{c}\"")).collect();
            let values: Vec<String> = columns
                .iter()
                .map(|(c, col)| {
                    if col.nullable {
                        "NULL".to_string()
                    } else {
                        raw.literal(table, c, col)
                    }
                })
                .collect();
            let sql = format!(
                "INSERT INTO \"{table}\" ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            );
            match raw.execute(&sql) {
                Ok(n) => {
                    assert_eq!(n, 1, "{sql}");
                    false
                }
                Err(e) => {
                    errors.push(e);
                    true
                }
            }
        });
        assert!(
            left.len() < before,
            "the previous release's INSERTs fail against the latest schema:\n{}",
            errors.join("\n")
        );
    }
    for (table, columns) in previous {
        let names: Vec<String> = columns.keys().map(|c| format!("\"{c}\"")).collect();
        let n = raw
            .count(&format!(
                "SELECT COUNT(*) AS n FROM (SELECT {} FROM \"{table}\") AS previous",
                names.join(", ")
            ))
            .unwrap();
        assert!(n >= 1, "{table}: the row inserted is read back");
    }
}

#[test]
fn both_backends_have_the_same_migrations() {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let sqlite: Vec<String> = MigrationSource::<Sqlite>::migrations(&tether::db::SQLITE_MIGRATIONS)
        .unwrap()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let postgres: Vec<String> = MigrationSource::<Pg>::migrations(&tether::db::POSTGRES_MIGRATIONS)
        .unwrap()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(sorted(sqlite), sorted(postgres));
}

/// Rows a previous release stored name their company only in metadata:
/// the migration that made it a column fills it, so that an agency-level
/// uninstall still finds them.
async fn the_relay_migration_gives_rows_stored_before_their_parent_account(backend: Backend) {
    let db = TestDb::new(backend);
    let mut raw = Raw::open(&db, backend);
    let names = raw.migrations();
    let relay = names
        .iter()
        .position(|n| n.ends_with("_relay"))
        .expect("the relay migration");
    for name in &names[..relay] {
        raw.apply(name);
    }
    raw.execute(
        "INSERT INTO tenants (id, external_id, name, created_at, updated_at) \
         VALUES ('t1', 'acme', 'acme', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    )
    .unwrap();
    for (id, account, metadata) in [
        ("c1", "loc_1", r#"{"locationId":"loc_1","companyId":"c_9"}"#),
        ("c2", "loc_2", r#"{"companyId":7}"#),
        ("c3", "hub_1", r#"{"hub_id":"hub_1"}"#),
    ] {
        raw.execute(&format!(
            "INSERT INTO connections (id, tenant_id, provider, account_id, status, scopes, \
             version, failure_count, metadata, created_at, updated_at) VALUES ('{id}', 't1', \
             'p', '{account}', 'connected', '[]', 0, 0, '{metadata}', CURRENT_TIMESTAMP, \
             CURRENT_TIMESTAMP)"
        ))
        .unwrap();
    }
    raw.apply(&names[relay]);
    let with_parent = |raw: &mut Raw, parent: &str| {
        raw.count(&format!(
            "SELECT COUNT(*) AS n FROM connections WHERE parent_account_id = '{parent}'"
        ))
        .unwrap()
    };
    assert_eq!(with_parent(&mut raw, "c_9"), 1);
    assert_eq!(
        raw.count("SELECT COUNT(*) AS n FROM connections WHERE parent_account_id IS NULL")
            .unwrap(),
        2,
        "a number or no companyId is no parent"
    );
}

/// Keys made before scopes keep what they could do: every scope but admin,
/// and admin too for an admin key; every provider.
async fn the_scopes_migration_keeps_each_keys_rights(backend: Backend) {
    let db = TestDb::new(backend);
    let mut raw = Raw::open(&db, backend);
    let names = raw.migrations();
    let scopes = names
        .iter()
        .position(|n| n.ends_with("_api_key_scopes"))
        .expect("the scopes migration");
    for name in &names[..scopes] {
        raw.apply(name);
    }
    for (id, admin) in [("k1", "TRUE"), ("k2", "FALSE")] {
        raw.execute(&format!(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, is_admin, created_at) \
             VALUES ('{id}', '{id}', 'p{id}', 'h', {admin}, CURRENT_TIMESTAMP)"
        ))
        .unwrap();
    }
    raw.apply(&names[scopes]);
    let every = "token:read status:read directory:read proxy links connections:write";
    for (id, expected) in [("k1", format!("{every} admin")), ("k2", every.to_string())] {
        assert_eq!(
            raw.count(&format!(
                "SELECT COUNT(*) AS n FROM api_keys WHERE id = '{id}' \
                 AND scopes = '{expected}' AND providers IS NULL"
            ))
            .unwrap(),
            1,
            "{id}"
        );
    }
}
