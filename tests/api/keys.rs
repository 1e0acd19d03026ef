//! The key ring against stored data: rotation, status, and refusing a ring
//! that cannot open what is stored.

use crate::backend_tests;
use crate::helpers::{
    run, spawn_app, stderr, stdout, store, tether, Backend, KEY_K1, KEY_K1_OTHER, KEY_K2,
};
use tether::crypto::KeyRing;
use tether::db::models::connection::Connection;
use tether::db::models::tenant::Tenant;
use tether::ids::ConnectionId;

backend_tests!(
    rotate_reencrypts_every_row_in_batches_and_is_safe_to_run_twice,
    a_row_written_during_rotation_keeps_the_writers_tokens,
    a_ring_without_a_key_the_data_uses_stops_the_start_naming_it,
    a_different_key_under_a_known_id_stops_the_start,
    a_refused_start_records_nothing,
);

fn both() -> String {
    format!("{KEY_K2},{KEY_K1}")
}

async fn rotate_reencrypts_every_row_in_batches_and_is_safe_to_run_twice(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let ids: Vec<ConnectionId> = (0..7)
        .map(|i| {
            store(
                &app,
                &t.id,
                &format!("acct-{i}"),
                &format!("at-{i}"),
                &format!("rt-{i}"),
            )
            .id
        })
        .collect();

    // The server keeps running on k1 while the operator rotates to k2.
    let out = run(
        tether(&app.db, &both()).args(["keys", "rotate", "--batch-size", "3"]),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("connections: 3 rows re-encrypted so far"),
        "{text}"
    );
    assert!(
        text.contains("connections: 6 rows re-encrypted so far"),
        "{text}"
    );
    assert!(text.contains("done: 7 row(s) re-encrypted"), "{text}");

    let k2_only = KeyRing::parse(KEY_K2).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let row = Connection::by_id(&mut app.conn(), id).unwrap();
        assert_eq!(row.key_id.as_deref(), Some("k2"));
        let tokens = row.tokens(&k2_only).unwrap().unwrap();
        assert_eq!(tokens.access_token.expose(), &format!("at-{i}"));
    }

    let again = run(tether(&app.db, &both()).args(["keys", "rotate"]), "");
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("done: 0 row(s) re-encrypted"),
        "{}",
        stdout(&again)
    );

    // k1 may now leave the ring.
    let status = run(tether(&app.db, KEY_K2).args(["keys", "status"]), "");
    assert!(
        status.status.success(),
        "{}{}",
        stdout(&status),
        stderr(&status)
    );
    let text = stdout(&status);
    let k2_line = text.lines().find(|l| l.starts_with("k2 ")).expect(&text);
    assert!(
        k2_line.contains("primary") && k2_line.split_whitespace().any(|w| w == "7"),
        "{text}"
    );
    assert!(
        text.contains("every encrypted row is under the primary key 'k2'"),
        "{text}"
    );
}

async fn a_row_written_during_rotation_keeps_the_writers_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    store(&app, &t.id, "acct", "old-access", "old-refresh");
    let ring = KeyRing::parse(&both()).unwrap();
    let mut conn = app.conn();
    // The rotation reads the row...
    let batch = Connection::sealed_batch(&mut conn, "k2", "", 10).unwrap();
    assert_eq!(batch.len(), 1);
    // ...a running server refreshes it meanwhile...
    let refreshed = store(&app, &t.id, "acct", "new-access", "new-refresh");
    // ...and the rotation's write must not bring the old tokens back.
    let sealed = Connection::reseal(&ring, &batch[0]).unwrap().unwrap();
    assert!(!Connection::replace_sealed(&mut conn, &batch[0], &sealed).unwrap());
    let row = Connection::by_id(&mut conn, &refreshed.id).unwrap();
    let tokens = row.tokens(&ring).unwrap().unwrap();
    assert_eq!(tokens.access_token.expose(), "new-access");
    // A second run picks the row up.
    let report = tether::keys::rotate(&mut conn, &ring, 10, |_| {}).unwrap();
    assert_eq!(report.rotated, 1);
    assert_eq!(
        Connection::by_id(&mut conn, &refreshed.id)
            .unwrap()
            .key_id
            .as_deref(),
        Some("k2")
    );
}

async fn a_ring_without_a_key_the_data_uses_stops_the_start_naming_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    store(&app, &t.id, "acct", "at", "rt");
    for args in [vec!["migrate"], vec!["serve"], vec!["tenant", "list"]] {
        let out = run(tether(&app.db, KEY_K2).args(&args), "");
        assert!(!out.status.success(), "{args:?} must fail");
        let err = stderr(&out);
        assert!(
            err.contains("key id 'k1'") && err.contains("TETHER_ENCRYPTION_KEYS"),
            "{args:?}: {err}"
        );
    }
    // `keys status` still works, to diagnose.
    let out = run(tether(&app.db, KEY_K2).args(["keys", "status"]), "");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("MISSING from ring"),
        "{}",
        stdout(&out)
    );
}

async fn a_different_key_under_a_known_id_stops_the_start(backend: Backend) {
    let app = spawn_app(backend).await;
    let out = run(tether(&app.db, KEY_K1_OTHER).arg("migrate"), "");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("'k1'") && err.contains("not the key that wrote"),
        "{err}"
    );
}

async fn a_refused_start_records_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    // A start with a new key id that cannot listen (the port is taken)...
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let out = run(
        tether(&app.db, &both())
            .env("TETHER_BIND", &bind)
            .arg("serve"),
        "",
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("cannot listen"), "{}", stderr(&out));
    // ...leaves no check that would tie 'k2' to that key: another key under
    // the same id is still welcome.
    let checks = tether::db::models::key_check::KeyCheck::all(&mut app.conn()).unwrap();
    assert!(
        checks.iter().all(|c| c.key_id != "k2"),
        "{:?}",
        checks.iter().map(|c| &c.key_id).collect::<Vec<_>>()
    );
    let other_k2 = "k2:BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=";
    let out = run(
        tether(&app.db, &format!("{other_k2},{KEY_K1}")).arg("migrate"),
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
