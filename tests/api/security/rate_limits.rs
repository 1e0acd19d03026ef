//! Rate limits: sign-in is limited per client address (every attempt), per
//! email and address (failed attempts only, checked after the address), and
//! per email from everywhere (failed attempts, a high backstop), so that the
//! right password is refused from an address that has guessed too often, but
//! neither a blocked client nor one guessing client can lock anyone out
//! elsewhere; the OAuth routes are limited per
//! client; behind a trusted proxy each client behind it has its own bucket;
//! a limited request changes nothing, and the limiters' memory is bounded.

use crate::backend_tests;
use crate::helpers::{
    signed_in, spawn_app_with, spawn_app_with_provider, Backend, Browser, FakeProvider, TestApp,
    TestDb, PASSWORD,
};

backend_tests!(
    login_is_rate_limited_per_email_even_with_the_right_password,
    oauth_routes_are_rate_limited_per_client,
    two_clients_behind_one_trusted_proxy_have_separate_buckets,
    without_trusted_proxies_a_forged_forwarded_for_is_ignored,
    a_blocked_address_cannot_lock_out_an_email,
    an_address_that_guessed_too_often_cannot_lock_out_the_email_elsewhere,
    guesses_spread_over_many_addresses_meet_the_email_backstop,
    successful_sign_ins_never_count_against_the_email,
    a_flood_of_distinct_emails_stores_only_counted_failures_within_the_bound,
);

/// Sign-in attempts every client address is allowed in five minutes.
const PER_ADDRESS: usize = 30;
/// Failed sign-ins every email is allowed from one address in five minutes.
const PER_EMAIL: usize = 10;
/// Failed sign-ins every email is allowed from all addresses in five minutes.
const PER_EMAIL_ANYWHERE: usize = 100;
const VICTIM: &str = "victim@acme.example";

/// An app that believes the `X-Forwarded-For` of requests from 127.0.0.1
/// (where the tests connect from), as it would a load balancer's.
async fn behind_a_proxy(backend: Backend) -> TestApp {
    let app = spawn_app_with(
        TestDb::new(backend),
        &[("TETHER_TRUSTED_PROXIES", "127.0.0.1/32")],
    )
    .await;
    app.create_admin("acme", VICTIM);
    app
}

/// One sign-in attempt from a browser of its own, through a proxy that
/// says `forwarded_for` (none: no header).
async fn sign_in_from(
    app: &TestApp,
    forwarded_for: Option<&str>,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let browser = Browser::new(app);
    let csrf = browser.csrf("/login").await;
    let mut req = browser
        .client
        .post(format!("{}/login", app.address))
        .form(&[("email", email), ("password", password), ("csrf", &csrf)]);
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap()
}

/// Uses up `client`'s sign-in attempts with wrong passwords for emails
/// nobody has (so that no email's counter gets near its limit).
async fn exhaust_address(app: &TestApp, client: &str, already: usize) {
    for i in already..PER_ADDRESS {
        let email = format!("nobody-{i}@elsewhere.example");
        let res = sign_in_from(app, Some(client), &email, "wrong password!").await;
        assert_eq!(res.status(), 401, "attempt {i} from {client}");
    }
    let res = sign_in_from(app, Some(client), "nobody@elsewhere.example", "x").await;
    assert_eq!(res.status(), 429, "{client} is blocked");
}

async fn login_is_rate_limited_per_email_even_with_the_right_password(backend: Backend) {
    let fake = FakeProvider::start().await;
    let app = spawn_app_with_provider(backend, &fake, "post").await;
    app.create_admin("acme", "victim@acme.example");
    let attacker = Browser::new(&app);
    let csrf = attacker.csrf("/login").await;
    let attempt = |password: &'static str| {
        let csrf = csrf.clone();
        let attacker = &attacker;
        async move {
            attacker
                .post_form(
                    "/login",
                    &[
                        ("email", "victim@acme.example"),
                        ("password", password),
                        ("csrf", &csrf),
                    ],
                )
                .await
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt("wrong password!").await.status(), 401);
    }
    let before = app.snapshot();
    let res = attempt(PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_ne!(attacker.get("/settings/integrations").await.status(), 200);
    assert_eq!(app.snapshot(), before);
}

async fn oauth_routes_are_rate_limited_per_client(backend: Backend) {
    let (app, _fake) = signed_in(backend, "post").await;
    for _ in 0..60 {
        assert_eq!(app.authorize("acme", &[]).await.status(), 303);
    }
    let before = app.snapshot();
    let res = app.authorize("acme", &[]).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let res = app
        .get("/oauth/acme/callback?code=the-code&state=anything")
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.snapshot(), before);
}

async fn two_clients_behind_one_trusted_proxy_have_separate_buckets(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    exhaust_address(&app, "203.0.113.1", 0).await;
    // A hop the first client writes itself, left of the one the proxy
    // appends, does not make it someone else.
    let forged = sign_in_from(&app, Some("203.0.113.2, 203.0.113.1"), VICTIM, PASSWORD).await;
    assert_eq!(forged.status(), 429);
    let res = sign_in_from(&app, Some("203.0.113.2"), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 303, "the second client signs in");
    // Two addresses in one IPv6 /64 are one client; another /64 is not.
    exhaust_address(&app, "2001:db8:1:1::a", 0).await;
    let same_64 = sign_in_from(&app, Some("2001:db8:1:1::b"), VICTIM, PASSWORD).await;
    assert_eq!(same_64.status(), 429);
    let other_64 = sign_in_from(&app, Some("2001:db8:1:2::a"), VICTIM, PASSWORD).await;
    assert_eq!(other_64.status(), 303);
}

async fn without_trusted_proxies_a_forged_forwarded_for_is_ignored(backend: Backend) {
    let app = spawn_app_with(TestDb::new(backend), &[]).await;
    app.create_admin("acme", VICTIM);
    for i in 0..PER_ADDRESS {
        let email = format!("nobody-{i}@elsewhere.example");
        let forged = format!("198.51.100.{i}");
        let res = sign_in_from(&app, Some(&forged), &email, "wrong password!").await;
        assert_eq!(res.status(), 401, "attempt {i}");
    }
    let before = app.snapshot();
    let res = sign_in_from(&app, Some("198.51.100.200"), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 429, "every attempt came from 127.0.0.1");
    assert_eq!(app.snapshot(), before);
}

async fn a_blocked_address_cannot_lock_out_an_email(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    let attacker = "198.51.100.66";
    // Short of the email's limit, then the rest of the address's.
    for i in 0..PER_EMAIL - 1 {
        let res = sign_in_from(&app, Some(attacker), VICTIM, "a guess").await;
        assert_eq!(res.status(), 401, "guess {i}");
    }
    exhaust_address(&app, attacker, PER_EMAIL - 1).await;
    // The blocked attacker goes on guessing: none of it counts.
    let before = app.snapshot();
    for _ in 0..PER_EMAIL * 2 {
        let res = sign_in_from(&app, Some(attacker), VICTIM, "a guess").await;
        assert_eq!(res.status(), 429);
    }
    assert_eq!(app.snapshot(), before);
    let res = sign_in_from(&app, Some("198.51.100.7"), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 303, "the victim still signs in");
}

async fn an_address_that_guessed_too_often_cannot_lock_out_the_email_elsewhere(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    let attacker = "198.51.100.66";
    for i in 0..PER_EMAIL {
        let res = sign_in_from(&app, Some(attacker), VICTIM, "a guess").await;
        assert_eq!(res.status(), 401, "guess {i}");
    }
    // The guessing address now waits, even with the right password...
    let before = app.snapshot();
    let res = sign_in_from(&app, Some(attacker), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.snapshot(), before);
    // ...but the admin, elsewhere, signs in.
    let res = sign_in_from(&app, Some("192.0.2.10"), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 303, "the admin is not locked out");
}

async fn guesses_spread_over_many_addresses_meet_the_email_backstop(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    // Each address stays under its own limit for the email.
    let from = |i: usize| format!("10.{}.{}.1", i / PER_EMAIL, i % PER_EMAIL);
    for i in 0..PER_EMAIL_ANYWHERE {
        let res = sign_in_from(&app, Some(&from(i)), VICTIM, "a guess").await;
        assert_eq!(res.status(), 401, "guess {i}");
    }
    let before = app.snapshot();
    let res = sign_in_from(&app, Some("192.0.2.10"), VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 429, "the email's backstop is reached");
    assert_eq!(app.snapshot(), before);
}

async fn successful_sign_ins_never_count_against_the_email(backend: Backend) {
    let app = behind_a_proxy(backend).await;
    let client = Some("192.0.2.1");
    for i in 0..PER_EMAIL - 1 {
        let res = sign_in_from(&app, client, VICTIM, "a typo").await;
        assert_eq!(res.status(), 401, "typo {i}");
    }
    for i in 0..PER_EMAIL {
        let res = sign_in_from(&app, client, VICTIM, PASSWORD).await;
        assert_eq!(res.status(), 303, "sign-in {i}");
    }
    // The tenth failure is still a plain failure; after it, the email waits
    // (from this address).
    let res = sign_in_from(&app, client, VICTIM, "a typo").await;
    assert_eq!(res.status(), 401);
    let before = app.snapshot();
    let res = sign_in_from(&app, client, VICTIM, PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.snapshot(), before);
}

async fn a_flood_of_distinct_emails_stores_only_counted_failures_within_the_bound(
    backend: Backend,
) {
    let app = behind_a_proxy(backend).await;
    let clients = ["203.0.113.10", "203.0.113.11", "2001:db8:7::1"];
    let mut failures = 0;
    for client in clients {
        for i in 0..PER_ADDRESS + 5 {
            // Every fifth email is longer than any address can be.
            let local = if i % 5 == 0 {
                "x".repeat(300)
            } else {
                format!("flood-{i}")
            };
            let email = format!("{local}@{client}.flood.example");
            let res = sign_in_from(&app, Some(client), &email, "wrong password!").await;
            let expected = match i {
                i if i >= PER_ADDRESS => 429,
                i if i % 5 == 0 => 400,
                _ => 401,
            };
            assert_eq!(res.status(), expected, "attempt {i} from {client}");
            failures += usize::from(expected == 401);
        }
    }
    let state = &app.state;
    // Over-long emails and refused attempts never became keys.
    assert_eq!(state.login_failures.len(), failures);
    assert_eq!(state.login_failures_anywhere.len(), failures);
    assert_eq!(state.login_limiter.len(), clients.len());
    // The bound itself is the limiter's unit test (a flood past it).
    assert!(state.login_failures.len() <= tether::ratelimit::CAPACITY);
}
