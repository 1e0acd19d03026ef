//! Rate limits: sign-in is limited per email, so that even the right
//! password is refused once the limit is reached, and the OAuth routes are
//! limited per client; a limited request changes nothing.

use crate::backend_tests;
use crate::helpers::{
    signed_in, spawn_app_with_provider, Backend, Browser, FakeProvider, PASSWORD,
};

backend_tests!(
    login_is_rate_limited_per_email_even_with_the_right_password,
    oauth_routes_are_rate_limited_per_client,
);

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
