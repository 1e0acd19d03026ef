//! Encryption at rest: what is stored opens, and nothing else about it does.

use crate::backend_tests;
use crate::helpers::{all_bytes_under, contains, spawn_app, store, Backend, TestApp};
use diesel::prelude::*;
use tether::db::models::connection::{Connection, Status};
use tether::db::models::tenant::Tenant;

fn tenant(app: &TestApp, external_id: &str) -> Tenant {
    Tenant::create(&mut app.conn(), external_id, external_id).unwrap()
}

backend_tests!(
    a_stored_token_set_reads_back,
    a_second_grant_for_the_same_account_replaces_the_first,
    the_raw_database_holds_none_of_the_secret_bytes,
    a_ciphertext_copied_into_another_row_does_not_open,
    a_flipped_byte_gives_a_clear_error_not_a_panic,
    an_event_of_a_kind_this_version_does_not_know_is_refused_when_read,
    a_status_this_version_does_not_know_is_refused_when_read,
);

/// `connections.status` reads back as the status it names; a name no status
/// has (the column's CHECK keeps one out of the table, so it is selected
/// here) is an error that says so, never taken for `disconnected`.
async fn a_status_this_version_does_not_know_is_refused_when_read(backend: Backend) {
    use diesel::sql_types::Text;
    let app = spawn_app(backend).await;
    let read = |text: &str| {
        diesel::select(diesel::dsl::sql::<Text>(&format!("'{text}'")))
            .get_result::<Status>(&mut app.conn())
    };
    assert_eq!(read("needs_reconnect").unwrap(), Status::NeedsReconnect);
    let said = tether::error::chain(&read("teleported").unwrap_err());
    assert!(said.contains("'teleported'"), "{said}");
}

/// A stored event kind is read back as the kind it names, and a name no
/// kind has (written by a newer version, or by hand) is an error that says
/// so, never taken for another kind.
async fn an_event_of_a_kind_this_version_does_not_know_is_refused_when_read(backend: Backend) {
    use tether::db::models::event::{Actor, Event, EventKind, NewEvent};
    let app = spawn_app(backend).await;
    let t = tenant(&app, "acme");
    let provider = tether::ids::ProviderKey::known("demo");
    let new = NewEvent {
        tenant_id: &t.id,
        connection_id: None,
        provider: &provider,
        kind: EventKind::NeedsReconnect,
        actor: &Actor::Cli,
        detail: None,
    };
    Event::record(&mut app.conn(), &new).unwrap();
    let read = Event::recent(
        &mut app.conn(),
        &t.id,
        &tether::ids::ProviderKey::known("demo"),
        5,
    )
    .unwrap();
    assert_eq!(read[0].kind, EventKind::NeedsReconnect);
    diesel::sql_query("UPDATE events SET kind = 'teleported'")
        .execute(&mut app.conn())
        .unwrap();
    let err = Event::recent(
        &mut app.conn(),
        &t.id,
        &tether::ids::ProviderKey::known("demo"),
        5,
    )
    .unwrap_err();
    let said = tether::error::chain(&err);
    assert!(said.contains("'teleported'"), "{said}");
}

async fn a_stored_token_set_reads_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = tenant(&app, "acme");
    let stored = store(&app, &t.id, "acct-1", "access-abc", "refresh-xyz");
    let row = Connection::by_id(&mut app.conn(), &stored.id).unwrap();
    assert_eq!(row.status(), Status::Connected);
    assert_eq!(row.key_id.as_deref(), Some("k1"));
    assert_eq!(row.scopes(), vec!["contacts.read"]);
    assert_eq!(row.metadata()["locationId"], "loc_1");
    let tokens = row.tokens(&app.ctx.keys).unwrap().unwrap();
    assert_eq!(tokens.access_token.expose(), "access-abc");
    assert_eq!(tokens.refresh_token.unwrap().expose(), "refresh-xyz");
    assert_eq!(tokens.raw.expose()["refresh_token"], "refresh-xyz");
}

async fn a_second_grant_for_the_same_account_replaces_the_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = tenant(&app, "acme");
    let first = store(&app, &t.id, "acct-1", "access-1", "refresh-1");
    let second = store(&app, &t.id, "acct-1", "access-2", "refresh-2");
    assert_eq!(
        first.id, second.id,
        "one row per tenant, provider and account"
    );
    assert_eq!(second.version, first.version + 1);
    let tokens = second.tokens(&app.ctx.keys).unwrap().unwrap();
    assert_eq!(tokens.access_token.expose(), "access-2");
    let other = store(&app, &t.id, "acct-2", "access-3", "refresh-3");
    assert_ne!(other.id, first.id);
    let rows: i64 = {
        use tether::db::schema::connections;
        connections::table
            .filter(connections::tenant_id.eq(&t.id))
            .count()
            .get_result(&mut app.conn())
            .unwrap()
    };
    assert_eq!(rows, 2, "one row per account");
}

async fn the_raw_database_holds_none_of_the_secret_bytes(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = tenant(&app, "acme");
    let access = "ya29.SECRET-ACCESS-TOKEN-4f1c2b";
    let refresh = "1//SECRET-REFRESH-TOKEN-9e8d7c";
    store(&app, &t.id, "acct-1", access, refresh);
    match backend {
        Backend::Sqlite => {
            // The main file and its write-ahead log, every byte.
            let bytes = all_bytes_under(app.db.data_dir());
            assert!(
                contains(&bytes, b"Main Street Dental"),
                "the probe must see plaintext columns"
            );
            for secret in [access, refresh] {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{secret} found in the SQLite files"
                );
            }
        }
        Backend::Postgres => {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                row: String,
            }
            let rows: Vec<Row> = diesel::sql_query("SELECT c::text AS row FROM connections c")
                .load(&mut app.db.raw_pg())
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert!(rows[0].row.contains("Main Street Dental"));
            let hex_of = |s: &str| hex::encode(s.as_bytes());
            for secret in [access, refresh] {
                assert!(!rows[0].row.contains(secret), "{secret} in the row");
                assert!(
                    !rows[0].row.contains(&hex_of(secret)),
                    "{secret} hex-encoded in the row"
                );
            }
        }
    }
}

async fn a_ciphertext_copied_into_another_row_does_not_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = tenant(&app, "tenant-a");
    let b = tenant(&app, "tenant-b");
    let victim = store(&app, &a.id, "acct-a", "access-a", "refresh-a");
    let thief = store(&app, &b.id, "acct-b", "access-b", "refresh-b");
    {
        use tether::db::schema::connections::dsl::*;
        diesel::update(connections.find(&thief.id))
            .set(token_ciphertext.eq(victim.token_ciphertext.clone()))
            .execute(&mut app.conn())
            .unwrap();
    }
    let moved = Connection::by_id(&mut app.conn(), &thief.id).unwrap();
    let err = moved.tokens(&app.ctx.keys).unwrap_err();
    assert!(err.to_string().contains("failed authentication"), "{err}");
    // The original still opens.
    let original = Connection::by_id(&mut app.conn(), &victim.id).unwrap();
    assert!(original.tokens(&app.ctx.keys).is_ok());
}

async fn a_flipped_byte_gives_a_clear_error_not_a_panic(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = tenant(&app, "acme");
    let stored = store(&app, &t.id, "acct-1", "access-1", "refresh-1");
    for position in [
        0usize,
        30,
        stored.token_ciphertext.as_ref().unwrap().len() - 1,
    ] {
        let mut bytes = stored.token_ciphertext.clone().unwrap();
        bytes[position] ^= 0x01;
        {
            use tether::db::schema::connections::dsl::*;
            diesel::update(connections.find(&stored.id))
                .set(token_ciphertext.eq(bytes))
                .execute(&mut app.conn())
                .unwrap();
        }
        let row = Connection::by_id(&mut app.conn(), &stored.id).unwrap();
        let err = row.tokens(&app.ctx.keys).unwrap_err();
        assert!(
            err.to_string().contains("failed authentication"),
            "byte {position}: {err}"
        );
        // And through the service's error type, nothing secret and a stable code.
        let app_err = tether::error::AppError::from(err);
        assert_eq!(app_err.code(), "decryption_failed");
    }
}

#[actix_web::test]
async fn sqlite_runs_with_wal_a_busy_timeout_and_foreign_keys() {
    #[derive(QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    #[derive(QueryableByName)]
    struct Num {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let app = spawn_app(Backend::Sqlite).await;
    let mut conn = app.conn();
    let mode: Text = diesel::sql_query("PRAGMA journal_mode")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(mode.journal_mode, "wal");
    let fk: Num = diesel::sql_query("SELECT foreign_keys AS v FROM pragma_foreign_keys")
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(fk.v, 1);
    let busy: Num = diesel::sql_query("SELECT timeout AS v FROM pragma_busy_timeout")
        .get_result(&mut conn)
        .unwrap();
    assert!(busy.v >= 1000, "busy_timeout {}", busy.v);
    // Foreign keys are enforced: a connection of a tenant that does not exist is refused.
    let orphan = diesel::sql_query(
        "INSERT INTO events (id, tenant_id, provider, kind, actor, created_at) VALUES ('e1', 'no-such-tenant', 'demo', 'connected', 'x', '2026-01-01 00:00:00')",
    )
    .execute(&mut conn);
    assert!(orphan.is_err());
}
