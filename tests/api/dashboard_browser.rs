//! The Integrations page as a client admin uses it, in Debian's headless
//! Chromium: what needs the admin comes first, the fix sits beside the
//! broken account, the layout holds from 390 to 1440 px, Connect shows it is
//! pending, and every ending of the popup (closed by hand, a provider error)
//! is told on the card, with focus there. axe-core (from
//! tests/node-support, `npm ci`) checks the page for accessibility faults.

use crate::browser::{browser, screenshot, sign_in, wait_for_windows, WAIT};
use crate::helpers::{
    query_param, spawn_app_with_acme, Backend, FakeProvider, TestApp, ACME_ISSUER, OWNER, PASSWORD,
};
use diesel::prelude::*;
use fantoccini::{Client, Locator};
use std::path::{Path, PathBuf};
use tether::db::schema::connections;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

/// The broken account and the healthy one.
const BROKEN: &str = "loc-main";
const HEALTHY: &str = "loc-harbour";

/// An app with `acme` against a fake (taking the account id as its login
/// hint) and the demo provider; tenant `acme` with an admin, one account
/// the provider no longer accepts and one in good health.
async fn tenant_with_a_broken_account(fake: &FakeProvider) -> TestApp {
    let app = spawn_app_with_acme(
        Backend::Sqlite,
        fake,
        "login_hint = \"account_id\"\n",
        &[("TETHER_DEMO_PROVIDER", "true")],
    )
    .await;
    app.create_admin("acme", OWNER);
    let tenant = app.ensure_tenant("acme");
    for (account, name) in [
        (HEALTHY, "Harbour Road Dental"),
        (BROKEN, "Main Street Dental"),
    ] {
        let c = app.seed(&tenant.id, account, &format!("rt-{account}"), 3600, 3000);
        diesel::update(connections::table.find(&c.id))
            .set((
                connections::account_name.eq(Some(name)),
                connections::scopes.eq(r#"["contacts.read","contacts.write"]"#),
            ))
            .execute(&mut app.conn())
            .unwrap();
    }
    let broken = app.acme_account("acme", BROKEN);
    diesel::update(connections::table.find(&broken.id))
        .set((
            connections::status.eq("needs_reconnect"),
            connections::last_error.eq(Some("invalid_grant: the grant was revoked")),
        ))
        .execute(&mut app.conn())
        .unwrap();
    app
}

/// A provider's authorize page that approves at once: back to `.0` with a
/// code and the request's state, as a redirect.
struct SendBack(String);

impl wiremock::Respond for SendBack {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let state = query_param(request.url.as_str(), "state").unwrap_or_default();
        let back = format!(
            "{}?code=the-code&state={}&iss={}",
            self.0,
            url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(ACME_ISSUER.as_bytes()).collect::<String>()
        );
        ResponseTemplate::new(302).insert_header("location", back.as_str())
    }
}

/// Runs `script` (a function body) in the page; its JSON result.
async fn eval(client: &Client, script: &str) -> serde_json::Value {
    client.execute(script, vec![]).await.expect("run a script")
}

/// Waits until `script` (a function body) returns true, for at most WAIT.
async fn wait_until(client: &Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if eval(client, script).await == serde_json::Value::Bool(true) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        actix_web::rt::time::sleep(crate::browser::POLL).await;
    }
}

/// Where screenshots go when TETHER_SCREENSHOT_DIR names a folder.
fn shots() -> Option<PathBuf> {
    std::env::var_os("TETHER_SCREENSHOT_DIR").map(PathBuf::from)
}

/// The WCAG contrast ratio of two `rgb(r, g, b)` colours.
fn contrast(a: &str, b: &str) -> f64 {
    fn luminance(rgb: &str) -> f64 {
        let parts: Vec<f64> = rgb
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .take(3)
            .map(|p| p.trim().parse::<f64>().expect("a colour channel") / 255.0)
            .collect();
        let lin = |c: f64| {
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(parts[0]) + 0.7152 * lin(parts[1]) + 0.0722 * lin(parts[2])
    }
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// axe-core's violations on the page now (with every disclosure open), or
/// None when axe-core is not installed and the browser tests are optional.
async fn axe_violations(client: &Client) -> Option<Vec<serde_json::Value>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node-support/node_modules/axe-core/axe.min.js");
    let Ok(axe) = std::fs::read_to_string(&file) else {
        assert!(
            std::env::var("TETHER_BROWSER_TESTS").as_deref() != Ok("required"),
            "TETHER_BROWSER_TESTS=required, but {} is missing: run `npm ci --prefix tests/node-support`",
            file.display()
        );
        eprintln!("axe-core skipped: {} is missing", file.display());
        return None;
    };
    eval(
        client,
        "document.querySelectorAll('details').forEach(function (d) { d.open = true; }); return true;",
    )
    .await;
    // Loaded through WebDriver, which the page's CSP does not govern.
    let script = format!(
        "{axe}\nreturn axe.run(document, {{ resultTypes: ['violations'] }}).then(function (r) {{ return r.violations; }});"
    );
    let found = client
        .execute(&script, vec![])
        .await
        .expect("axe-core runs");
    Some(found.as_array().cloned().unwrap_or_default())
}

#[actix_web::test]
async fn what_needs_the_admin_comes_first_with_its_fix_beside_the_account_at_every_width() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let fake = FakeProvider::start().await;
    let app = tenant_with_a_broken_account(&fake).await;
    sign_in(&client, &app.address, OWNER, PASSWORD).await;

    // The focus ring reaches 3:1 against the card it is drawn on (checked
    // before any click, so a programmatic focus shows it as a key would).
    let ring = eval(
        &client,
        r#"var b = document.querySelector('article.card [data-action="reconnect-account"]');
           b.focus();
           var s = getComputedStyle(b);
           return [b.matches(':focus-visible'), s.outlineStyle, s.outlineColor,
                   getComputedStyle(b.closest('.card')).backgroundColor];"#,
    )
    .await;
    assert_eq!(ring[0], true, "{ring}");
    assert_eq!(ring[1], "solid", "{ring}");
    let ratio = contrast(ring[2].as_str().unwrap(), ring[3].as_str().unwrap());
    assert!(ratio >= 3.0, "focus ring contrast {ratio:.2}: {ring}");

    // First after the heading: what needs the admin, with its fix.
    let order = eval(
        &client,
        r#"var need = document.querySelector('.attention');
           var first = document.querySelector('article.card');
           return need && need.getBoundingClientRect().top < first.getBoundingClientRect().top;"#,
    )
    .await;
    assert_eq!(order, true, "the attention list comes before the cards");
    let item = client
        .find(Locator::Css(&format!(
            r#".attention [data-attention="acme"][data-account="{BROKEN}"]"#
        )))
        .await
        .expect("the broken account is listed first");
    let text = item.text().await.unwrap();
    assert!(
        text.contains("Main Street Dental") && text.contains("no longer accepts"),
        "{text}"
    );
    item.find(Locator::Css(r#"[data-action="reconnect-account"]"#))
        .await
        .expect("its Reconnect");
    assert!(
        client
            .find(Locator::Css(&format!(
                r#".attention [data-account="{HEALTHY}"]"#
            )))
            .await
            .is_err(),
        "a healthy account needs nobody"
    );
    // Connected providers come before those available to connect.
    let sections = eval(
        &client,
        r#"return [...document.querySelectorAll('article.card')].map(function (c) { return c.dataset.provider; });"#,
    )
    .await;
    assert_eq!(sections, serde_json::json!(["acme", "demo"]), "{sections}");

    // On the account: its own Reconnect, naming it, and no Renew (which
    // cannot work after the provider refused the grant).
    let account = format!(r#"article.card [data-account="{BROKEN}"]"#);
    let banner = client
        .find(Locator::Css(&format!(
            r#"{account} [data-need="reconnect"]"#
        )))
        .await
        .expect("the account's banner");
    let said = banner.text().await.unwrap();
    assert!(
        said.contains("When Acme CRM asks, choose Main Street Dental."),
        "{said}"
    );
    assert!(client
        .find(Locator::Css(&format!(
            r#"{account} [data-action="refresh"]"#
        )))
        .await
        .is_err());
    client
        .find(Locator::Css(&format!(
            r#"[data-account="{HEALTHY}"] [data-action="refresh"]"#
        )))
        .await
        .expect("a healthy account can be renewed");

    for width in [390, 1024, 1280, 1440] {
        client
            .set_window_size(width, 900)
            .await
            .expect("resize the window");
        // The fix sits beside the problem: the account's Reconnect is within
        // the account's first 260 px.
        let gap = eval(
            &client,
            &format!(
                r#"var item = document.querySelector('article.card [data-account="{BROKEN}"]');
                   var button = item.querySelector('[data-action="reconnect-account"]');
                   return button.getBoundingClientRect().top - item.getBoundingClientRect().top;"#
            ),
        )
        .await;
        let gap = gap.as_f64().unwrap();
        assert!(
            gap < 260.0,
            "{width} px: Reconnect is {gap} px into the account"
        );
        // Nothing wider than the window, nothing spilling out of its box,
        // and no card stretched below its last line.
        let faults = eval(
            &client,
            r#"var out = [];
               if (document.documentElement.scrollWidth > window.innerWidth)
                 out.push('page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth);
               document.querySelectorAll('.card, .attention, .account-item, .banner, .facts dd, .badge').forEach(function (e) {
                 if (e.scrollWidth > e.clientWidth + 1) out.push('overflow: ' + e.className + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
               });
               document.querySelectorAll('article.card').forEach(function (c) {
                 var last = c.lastElementChild.getBoundingClientRect().bottom;
                 var blank = c.getBoundingClientRect().bottom - last;
                 if (blank > 40) out.push('blank ' + Math.round(blank) + ' px in ' + c.dataset.provider);
                 var title = c.querySelector('h3').getBoundingClientRect().top;
                 var action = c.querySelector('[data-action="connect"]');
                 if (action && !c.querySelector('.accounts')) {
                   var gap = action.getBoundingClientRect().top - title;
                   if (gap > 200) out.push('Connect ' + Math.round(gap) + ' px below ' + c.dataset.provider);
                 }
               });
               return out;"#,
        )
        .await;
        assert_eq!(faults, serde_json::json!([]), "{width} px");
        if let Some(dir) = shots() {
            // The whole page, for a person to look at.
            client.set_window_size(width, 2200).await.expect("resize");
            eval(&client, "window.scrollTo(0, 0); return true;").await;
            screenshot(&client, &dir.join(format!("dashboard-{width}.png"))).await;
        }
    }
    client.set_window_size(1280, 900).await.expect("resize");

    if let Some(found) = axe_violations(&client).await {
        assert!(
            found.is_empty(),
            "axe-core: {}",
            serde_json::Value::Array(found)
        );
    }
    client.close().await.expect("end the browser session");
}

#[actix_web::test]
async fn reconnect_is_bound_to_the_account_shows_pending_and_a_window_closed_by_hand_is_told() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let fake = FakeProvider::start().await;
    let app = tenant_with_a_broken_account(&fake).await;
    sign_in(&client, &app.address, OWNER, PASSWORD).await;
    let dashboard = client.window().await.expect("the dashboard window");

    client
        .find(Locator::Css(&format!(
            r#"article.card [data-account="{BROKEN}"] [data-action="reconnect-account"]"#
        )))
        .await
        .expect("the account's Reconnect")
        .click()
        .await
        .expect("click it");
    let handles = wait_for_windows(&client, "the popup", |h| h.len() == 2).await;
    let popup = handles.into_iter().find(|h| *h != dashboard).unwrap();

    // The card says it is waiting, and offers to reopen or cancel.
    let card = r#"article.card[data-provider="acme"]"#;
    wait_until(
        &client,
        "the pending card",
        &format!(
            r#"var c = document.querySelector('{card}');
               return c.classList.contains('pending')
                 && c.querySelector('[data-card-message]').textContent.indexOf('Finishing in the Acme CRM window') >= 0;"#
        ),
    )
    .await;
    let busy = eval(
        &client,
        &format!(
            r#"return document.querySelector('{card} [data-account="{BROKEN}"] [data-action="reconnect-account"]').getAttribute('aria-busy');"#
        ),
    )
    .await;
    assert_eq!(busy, "true");

    // At the provider, the account to reconnect is the one offered.
    client.switch_to_window(popup).await.expect("to the popup");
    let deadline = std::time::Instant::now() + WAIT;
    let url = loop {
        let url = client.current_url().await.expect("the popup's address");
        if url.as_str().starts_with(&fake.server.uri()) {
            break url;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the popup never reached the provider: {url}"
        );
        actix_web::rt::time::sleep(crate::browser::POLL).await;
    };
    assert_eq!(
        query_param(url.as_str(), "login_hint").as_deref(),
        Some(BROKEN)
    );

    // Closed by hand: the card says so, and focus is on it.
    client
        .close_window()
        .await
        .expect("close the popup by hand");
    client.switch_to_window(dashboard).await.expect("back");
    wait_until(
        &client,
        "the closed-window message",
        &format!(
            r#"var c = document.querySelector('{card}');
               return !c.classList.contains('pending')
                 && c.querySelector('[data-card-message]').textContent.indexOf('window was closed before it finished') >= 0
                 && c.contains(document.activeElement);"#
        ),
    )
    .await;
    let role = eval(
        &client,
        &format!(r#"return document.querySelector('{card} [data-card-message] .flash').getAttribute('role');"#),
    )
    .await;
    assert_eq!(role, "alert", "told to a screen reader at once");
    assert_eq!(
        app.acme_account("acme", BROKEN).status(),
        tether::db::models::connection::Status::NeedsReconnect
    );
    client.close().await.expect("end the browser session");
}

#[actix_web::test]
async fn a_provider_failing_the_exchange_is_told_on_the_card_not_in_the_popup() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let fake = FakeProvider::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=authorization_code"))
        .respond_with(ResponseTemplate::new(500).set_body_string("<html>oops</html>"))
        .mount(&fake.server)
        .await;
    let app = tenant_with_a_broken_account(&fake).await;
    // The provider approves at once and sends the person back with a code
    // it then refuses to exchange.
    Mock::given(method("GET"))
        .and(path("/authorize"))
        .respond_with(SendBack(format!("{}/oauth/acme/callback", app.address)))
        .mount(&fake.server)
        .await;
    sign_in(&client, &app.address, OWNER, PASSWORD).await;
    let dashboard = client.window().await.expect("the dashboard window");
    client
        .find(Locator::Css(
            r#"article.card[data-provider="acme"] form.card-connect [data-action="connect"]"#,
        ))
        .await
        .expect("Add another account")
        .click()
        .await
        .expect("click it");
    wait_for_windows(&client, "the popup", |h| h.len() == 2).await;
    wait_for_windows(&client, "the popup to close itself", |h| h.len() == 1).await;
    client.switch_to_window(dashboard).await.expect("back");
    let card = r#"article.card[data-provider="acme"]"#;
    wait_until(
        &client,
        "the failure on the card",
        &format!(
            r#"var c = document.querySelector('{card}');
               var m = c && c.querySelector('[data-card-message]');
               return !!m && m.textContent.indexOf('Acme CRM') >= 0
                 && m.querySelector('.flash-warn') !== null
                 && c.contains(document.activeElement);"#
        ),
    )
    .await;
    let url = client.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/settings/integrations",
        "the dashboard stayed where it was"
    );
    client.close().await.expect("end the browser session");
}

#[actix_web::test]
async fn a_posting_button_says_it_is_working_and_is_sent_once_and_times_are_the_viewers() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let fake = FakeProvider::start().await;
    // A slow provider: the renewal takes two seconds to answer.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({
                    "access_token": "at-renewed", "refresh_token": "rt-renewed",
                    "token_type": "Bearer", "expires_in": 3600
                }))
                .set_delay(std::time::Duration::from_secs(2)),
        )
        .mount(&fake.server)
        .await;
    let app = tenant_with_a_broken_account(&fake).await;
    sign_in(&client, &app.address, OWNER, PASSWORD).await;

    // Times: relative text, and the exact time in the viewer's own format
    // rather than the server's UTC text.
    let times = eval(
        &client,
        r#"return [...document.querySelectorAll('time[data-rel]')].map(function (t) {
             return [t.textContent, t.title, t.getAttribute('datetime')]; });"#,
    )
    .await;
    let times = times.as_array().unwrap();
    assert!(!times.is_empty());
    for t in times {
        let (text, title) = (t[0].as_str().unwrap(), t[1].as_str().unwrap());
        assert!(
            text == "just now" || text.starts_with("in ") || text.ends_with(" ago"),
            "{t}"
        );
        assert!(!title.ends_with("UTC"), "shown in the viewer's zone: {t}");
    }

    // Two clicks on Renew now while the first is on its way: one renewal.
    let said = eval(
        &client,
        &format!(
            r#"var sent = 0;
               document.addEventListener('submit', function (e) {{ if (!e.defaultPrevented) sent += 1; }});
               var b = document.querySelector('article.card [data-account="{HEALTHY}"] [data-action="refresh"]');
               b.click(); b.click();
               return [b.getAttribute('aria-busy'), b.textContent, sent];"#
        ),
    )
    .await;
    assert_eq!(said[2], 1, "the second click sends nothing: {said}");
    assert_eq!(said[0], "true", "{said}");
    assert!(said[1].as_str().unwrap().starts_with("Renewing…"), "{said}");
    wait_until(
        &client,
        "the renewal's outcome on the card",
        r#"var m = document.querySelector('article.card[data-provider="acme"] [data-card-message]');
           return !!m && m.textContent.indexOf('is renewed') >= 0;"#,
    )
    .await;
    let renewals = fake
        .requests()
        .await
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token"))
        .count();
    assert_eq!(renewals, 1, "sent once");
    let url = client.current_url().await.unwrap();
    assert_eq!(url.fragment(), Some("card-acme"), "back at the card: {url}");
    client.close().await.expect("end the browser session");
}
