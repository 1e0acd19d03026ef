//! connect.js in the real headless Chromium: the CRM's page is served from
//! other origins on loopback (other ports of 127.0.0.1), includes Tether's
//! `/static/connect.js`, and records every message it receives. A listed
//! page learns the outcome; an unlisted one learns nothing, even when it
//! names a listed origin itself.

use crate::browser::{browser, wait_for_windows, POLL, WAIT};
use crate::helpers::{spawn_app_with, Backend, TestApp, TestDb};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::time::Instant;
use tether::db::models::tenant::Tenant;

/// The CRM's settings page. `window.link` is set by the test (the CRM's
/// backend would have asked for it); `received` is every message the page
/// got, `tetherOutcome` what connect.js resolved with. "Forge" opens the link
/// itself, with another origin in `embed`, and, once its popup has closed,
/// posts itself a last message so the test knows everything before it has
/// been delivered.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>CRM settings</title>
<script src="{tether}/static/connect.js"></script></head>
<body>
<button id="connect" type="button">Connect</button>
<button id="forge" type="button">Forge</button>
<button id="connect-session" type="button">Connect with the session</button>
<pre id="outcome"></pre>
<script>
window.received = [];
window.addEventListener("message", function (e) {
  if (e.source === window && e.data === "forged popup closed") { window.forgeDone = true; return; }
  window.received.push({ origin: e.origin, data: e.data });
});
document.getElementById("connect").addEventListener("click", function () {
  TetherConnect.open(window.link).then(function (outcome) {
    window.tetherOutcome = outcome;
    document.getElementById("outcome").textContent = JSON.stringify(outcome);
  });
});
document.getElementById("connect-session").addEventListener("click", function () {
  TetherConnect.open({ session: window.session, provider: "demo" }).then(function (outcome) {
    window.tetherOutcome = outcome;
  });
});
document.getElementById("forge").addEventListener("click", function () {
  var url = new URL(window.link);
  url.searchParams.set("embed", window.forgedOrigin);
  var popup = window.open(url.href, "", "popup=yes,width=560,height=720");
  var timer = setInterval(function () {
    if (!popup.closed) return;
    clearInterval(timer);
    window.postMessage("forged popup closed", window.location.origin);
  }, 100);
});
</script>
</body></html>"#;

/// Tether with the demo provider and tenant `acme`, listing only `listed`
/// as an embedding origin; the CRM's page served at `listed` and at
/// `unlisted`; a global API key.
struct Setup {
    app: TestApp,
    key: String,
    listed: String,
    unlisted: String,
}

async fn setup() -> Setup {
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let listed = format!("http://127.0.0.1:{}", a.local_addr().unwrap().port());
    let unlisted = format!("http://127.0.0.1:{}", b.local_addr().unwrap().port());
    let app = spawn_app_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("TETHER_DEMO_PROVIDER", "true"),
            ("TETHER_EMBED_ORIGINS", &listed),
        ],
    )
    .await;
    Tenant::create(&mut app.conn(), "acme", "Acme").unwrap();
    let key = app.api_key(None, false);
    let page = PAGE.replace("{tether}", &app.address);
    let crm = actix_web::HttpServer::new(move || {
        let page = page.clone();
        actix_web::App::new().route(
            "/",
            actix_web::web::get().to(move || {
                let page = page.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(page)
                }
            }),
        )
    })
    .workers(1)
    .listen(a)
    .unwrap()
    .listen(b)
    .unwrap()
    .run();
    actix_web::rt::spawn(crm);
    Setup {
        app,
        key,
        listed,
        unlisted,
    }
}

impl Setup {
    /// A connect link for the demo provider, as the CRM's backend gets one.
    async fn link(&self) -> String {
        self.app.connect_link(&self.key, "demo").await
    }

    /// The demo connection's status, from the internal API.
    async fn status(&self) -> Value {
        self.app
            .api_get("/api/v1/tenants/acme/connections/demo", &self.key)
            .await
            .json()
            .await
            .unwrap()
    }
}

/// Opens the CRM's page at `origin` with `link` in hand.
async fn open_crm_page(client: &Client, origin: &str, link: &str) {
    client
        .goto(&format!("{origin}/"))
        .await
        .expect("the CRM's page");
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#connect"))
        .await
        .expect("its Connect button");
    client
        .execute("window.link = arguments[0];", vec![json!(link)])
        .await
        .expect("hand the page its link");
}

/// Clicks `button` on the page and switches to the popup it opens.
async fn click_to_popup(client: &Client, button: &str) {
    let page = client.window().await.expect("the page's window");
    client
        .find(Locator::Css(button))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    let handles = wait_for_windows(client, "the popup to open", |h| h.len() == 2).await;
    let popup = handles.into_iter().find(|h| *h != page).expect("the popup");
    client.switch_to_window(popup).await.expect("to the popup");
}

/// In the popup: continue on the link's page, approve at the demo
/// provider, and wait until the popup has closed itself; back on the page.
async fn go_through_the_flow(client: &Client) {
    let wait = || client.wait().at_most(WAIT);
    wait()
        .for_element(Locator::Css("#link-continue"))
        .await
        .expect("the link's page")
        .click()
        .await
        .expect("continue");
    let approve = wait()
        .for_element(Locator::Css("#approve"))
        .await
        .expect("the demo consent page");
    // The popup may close itself before the click's answer comes back.
    if let Err(e) = approve.click().await {
        assert!(e.is_no_such_window(), "click approve: {e}");
    }
    let handles = wait_for_windows(client, "the popup to close itself", |h| h.len() == 1).await;
    client
        .switch_to_window(handles[0].clone())
        .await
        .expect("back to the page");
}

/// Polls `expression` on the page until it is neither null nor false.
async fn wait_for_js(client: &Client, what: &str, expression: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = client
            .execute(&format!("return {expression};"), vec![])
            .await
            .expect("run a script on the page");
        if !value.is_null() && value != Value::Bool(false) {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(POLL).await;
    }
}

async fn received(client: &Client) -> Vec<Value> {
    match client
        .execute("return window.received;", vec![])
        .await
        .expect("read the page's messages")
    {
        Value::Array(messages) => messages,
        other => panic!("not a list: {other}"),
    }
}

#[actix_web::test]
async fn a_listed_crm_page_connects_in_a_popup_and_learns_the_outcome_without_a_token() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let s = setup().await;
    let link = s.link().await;
    open_crm_page(&client, &s.listed, &link).await;
    click_to_popup(&client, "#connect").await;
    let url = client.current_url().await.expect("the popup's address");
    assert_eq!(url.origin().ascii_serialization(), s.app.address);
    assert_eq!(
        url.query_pairs()
            .find(|(k, _)| k == "embed")
            .map(|(_, v)| v.into_owned()),
        Some(s.listed.clone()),
        "connect.js names the page's origin"
    );
    go_through_the_flow(&client).await;

    let outcome = wait_for_js(
        &client,
        "connect.js to resolve",
        "window.tetherOutcome || null",
    )
    .await;
    assert_eq!(outcome["status"], "connected", "{outcome}");
    assert_eq!(outcome["provider"], "demo", "{outcome}");
    assert_eq!(outcome["account"], "Demo Account", "{outcome}");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .contains("Demo Account"),
        "{outcome}"
    );
    let messages = received(&client).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["origin"], s.app.address.as_str());
    assert_eq!(s.status().await["status"], "connected");

    // The access token the API hands out never reached the page.
    let token: Value = s
        .app
        .api_get("/api/v1/tenants/acme/connections/demo/token", &s.key)
        .await
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().expect("a token").to_string();
    let seen = format!("{outcome}{}", Value::Array(messages));
    assert!(!seen.contains(&access), "{seen}");

    client.close().await.expect("end the browser session");
}

/// A connect session serves the page's button: the popup opens the
/// session's page for the provider on Tether's origin (where connect.js
/// came from), and the page learns the outcome; one use is spent.
#[actix_web::test]
async fn a_connect_session_serves_the_pages_button_and_spends_one_use() {
    use diesel::prelude::*;
    use tether::db::schema::connect_sessions;
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let s = setup().await;
    let (status, session) = s
        .app
        .post_json(
            "/api/v1/tenants/acme/connect-sessions",
            &s.key,
            Some(json!({"providers": ["demo"], "uses": 3})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let token = session["token"].as_str().unwrap().to_string();
    open_crm_page(&client, &s.listed, "unused").await;
    client
        .execute("window.session = arguments[0];", vec![json!(token)])
        .await
        .expect("hand the page its session");
    click_to_popup(&client, "#connect-session").await;
    let url = client.current_url().await.expect("the popup's address");
    assert_eq!(url.origin().ascii_serialization(), s.app.address);
    assert_eq!(url.path(), format!("/connect/session/{token}/demo"));
    go_through_the_flow(&client).await;
    let outcome = wait_for_js(
        &client,
        "connect.js to resolve",
        "window.tetherOutcome || null",
    )
    .await;
    assert_eq!(outcome["status"], "connected", "{outcome}");
    assert_eq!(s.status().await["status"], "connected");
    let left: Vec<i32> = connect_sessions::table
        .select(connect_sessions::uses_left)
        .load(&mut s.app.conn())
        .unwrap();
    assert_eq!(left, vec![2]);
    client.close().await.expect("end the browser session");
}

#[actix_web::test]
async fn an_unlisted_crm_page_is_told_nothing_even_when_it_names_a_listed_origin() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let s = setup().await;

    // connect.js on an unlisted page: the link's page refuses the origin;
    // the person closes the popup and the page learns only "closed".
    let link = s.link().await;
    open_crm_page(&client, &s.unlisted, &link).await;
    click_to_popup(&client, "#connect").await;
    let code = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#problem code"))
        .await
        .expect("an error page")
        .prop("textContent")
        .await
        .expect("its code");
    assert_eq!(code.as_deref(), Some("invalid_embed_origin"));
    client.close_window().await.expect("close the popup");
    let handles = wait_for_windows(&client, "one window", |h| h.len() == 1).await;
    client.switch_to_window(handles[0].clone()).await.unwrap();
    let outcome = wait_for_js(
        &client,
        "connect.js to resolve",
        "window.tetherOutcome || null",
    )
    .await;
    assert_eq!(outcome, json!({"status": "closed"}));
    assert_eq!(received(&client).await, Vec::<Value>::new());
    assert_eq!(s.status().await["status"], "not_connected");

    // The same page opening a link with the listed origin in `embed`: the
    // flow goes through, and the popup posts to the listed origin, which is
    // not this page's, so the browser delivers nothing here.
    let link = s.link().await;
    client
        .execute(
            "window.link = arguments[0]; window.forgedOrigin = arguments[1];",
            vec![json!(link), json!(s.listed)],
        )
        .await
        .unwrap();
    click_to_popup(&client, "#forge").await;
    go_through_the_flow(&client).await;
    wait_for_js(
        &client,
        "the page's own last message",
        "window.forgeDone === true",
    )
    .await;
    assert_eq!(received(&client).await, Vec::<Value>::new());
    assert_eq!(
        s.status().await["status"],
        "connected",
        "the flow itself went through"
    );

    client.close().await.expect("end the browser session");
}
