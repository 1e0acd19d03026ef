//! The pages as a person sees them: Debian's headless Chromium, driven over
//! WebDriver by chromedriver. Without the browser these tests say they are
//! skipped, unless TETHER_BROWSER_TESTS=required (as in CI), where that fails.

use crate::helpers::{spawn_app, Backend, TestDb};
use fantoccini::wd::{Capabilities, WindowHandle};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether::auth::hash_password;
use tether::db::models::tenant::Tenant;
use tether::db::models::user::User;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The longest any one wait for the page may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(100);

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Chromium's flags: no network of its own (this machine's is closed and it
/// would retry), no sandbox (tests run as root), and popups allowed because
/// Connect opens the provider's consent page in one.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-popup-blocking",
    "--window-size=1280,900",
];

/// Ok when both Chromium and chromedriver are installed, else why not.
pub fn browser_available() -> Result<(), String> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).is_file() {
            return Err(format!(
                "{bin} is not installed (apt-get install chromium chromium-driver)"
            ));
        }
    }
    Ok(())
}

/// A running chromedriver and the browser profile it hands to Chromium; both
/// go away on drop, even when the test panics before closing its session.
pub struct DriverGuard {
    /// The WebDriver endpoint, `http://127.0.0.1:<port>`.
    pub url: String,
    /// Chromium's `--user-data-dir`, kept until the browser is gone.
    pub profile: tempfile::TempDir,
    child: Child,
}

impl DriverGuard {
    /// Starts chromedriver on a free port and waits until `/status` says ready.
    pub async fn start() -> Result<DriverGuard, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop can end Chromium along with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
        let mut guard = DriverGuard {
            url: format!("http://127.0.0.1:{port}"),
            profile,
            child,
        };
        guard.wait_until_ready().await?;
        Ok(guard)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let status = format!("{}/status", self.url);
        let mut last = String::from("no answer");
        for _ in 0..100 {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("chromedriver exited at start: {exit}"));
            }
            match http.get(&status).send().await {
                Ok(resp) => match resp.json::<serde_json::Value>().await {
                    Ok(body) if body["value"]["ready"] == true => return Ok(()),
                    Ok(body) => last = body.to_string(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            actix_web::rt::time::sleep(POLL).await;
        }
        Err(format!(
            "chromedriver never became ready at {status}: {last}"
        ))
    }
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        // The negative pid names the group: chromedriver and the Chromium it
        // started. A session closed by the test has already ended Chromium.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago: bound on 127.0.0.1:0, then released.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A WebDriver session in a fresh headless Chromium, or None (having said
/// why) when the browser is not installed and the tests are not required.
pub async fn browser() -> Option<(Client, DriverGuard)> {
    if let Err(reason) = browser_available() {
        if std::env::var("TETHER_BROWSER_TESTS").as_deref() == Ok("required") {
            panic!("TETHER_BROWSER_TESTS=required, but {reason}");
        }
        eprintln!("skipped: {reason}");
        return None;
    }
    let driver = DriverGuard::start().await.expect("chromedriver");
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
    args.push(format!(
        "--user-data-dir={}",
        driver.profile.path().display()
    ));
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
    });
    let capabilities: Capabilities = match capabilities {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session from chromedriver");
    Some((client, driver))
}

/// Saves what the browser shows now as a PNG at `path`, making its folder.
pub async fn screenshot(client: &Client, path: &Path) {
    let png = client.screenshot().await.expect("screenshot");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    std::fs::write(path, png).expect("write screenshot");
}

/// Polls the window handles until `done` holds, for at most WAIT.
pub async fn wait_for_windows(
    client: &Client,
    what: &str,
    done: impl Fn(&[WindowHandle]) -> bool,
) -> Vec<WindowHandle> {
    let deadline = Instant::now() + WAIT;
    loop {
        let handles = client.windows().await.expect("window handles");
        if done(&handles) {
            return handles;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; windows: {handles:?}"
        );
        actix_web::rt::time::sleep(POLL).await;
    }
}

#[actix_web::test]
async fn browser_renders_a_page_served_by_tether() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;

    client
        .goto(&format!("{}/nothing-here", app.address))
        .await
        .expect("navigate");
    let h1 = client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("h1"))
        .await
        .expect("a heading");
    assert_eq!(h1.text().await.expect("heading text"), "Nothing here");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("not-found.png");
    screenshot(&client, &path).await;
    let png = std::fs::read(&path).expect("read screenshot");
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG: {path:?}");

    client.close().await.expect("end the browser session");
}

#[actix_web::test]

async fn admin_connects_the_demo_provider_in_a_popup_and_disconnects() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let app = crate::helpers::spawn_app_with(
        TestDb::new(Backend::Sqlite),
        &[("TETHER_DEMO_PROVIDER", "true")],
    )
    .await;
    let tenant = Tenant::create(&mut app.conn(), "acme", "Acme").expect("tenant");
    let mut conn = app.conn();
    let hash = hash_password("correct horse battery").expect("hash");
    User::create(&mut conn, &tenant.id, "owner@acme.example", Some(&hash)).expect("admin");
    drop(conn);
    let wait = || client.wait().at_most(WAIT);

    // Log in; the form lands on the integrations dashboard.
    client
        .goto(&format!("{}/login", app.address))
        .await
        .expect("login page");
    wait()
        .for_element(Locator::Css("#email"))
        .await
        .expect("email field")
        .send_keys("owner@acme.example")
        .await
        .expect("type email");
    client
        .find(Locator::Css("#password"))
        .await
        .expect("password field")
        .send_keys("correct horse battery")
        .await
        .expect("type password");
    client
        .find(Locator::Css("#login-submit"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("log in");
    wait()
        .for_element(Locator::Css(
            r#"[data-provider="demo"][data-status="not_connected"]"#,
        ))
        .await
        .expect("the demo card, not connected");
    let url = client.current_url().await.expect("url");
    assert_eq!(url.path(), "/settings/integrations");

    // Connect opens the consent page in a popup; the dashboard stays put.
    let dashboard = client.window().await.expect("dashboard window");
    client
        .execute("window.tetherNotReloaded = true;", vec![])
        .await
        .expect("mark the page");
    client
        .find(Locator::Css(
            r#"[data-provider="demo"] [data-action="connect"]"#,
        ))
        .await
        .expect("connect button")
        .click()
        .await
        .expect("click connect");
    let handles = wait_for_windows(&client, "the popup to open", |h| h.len() == 2).await;
    let popup = handles
        .into_iter()
        .find(|h| *h != dashboard)
        .expect("popup handle");
    client.switch_to_window(popup).await.expect("to the popup");
    let approve = wait()
        .for_element(Locator::Css("#approve"))
        .await
        .expect("approve button");
    // The popup may close itself before the click's answer comes back.
    if let Err(e) = approve.click().await {
        assert!(e.is_no_such_window(), "click approve: {e}");
    }
    wait_for_windows(&client, "the popup to close itself", |h| {
        h.len() == 1 && h[0] == dashboard
    })
    .await;
    client
        .switch_to_window(dashboard)
        .await
        .expect("back to the dashboard");

    // The card turns connected in place, without a reload.
    wait()
        .for_element(Locator::XPath(
            r#"//*[@data-provider="demo"][@data-status="connected"][contains(., "Demo Account")]"#,
        ))
        .await
        .expect("the demo card, connected as Demo Account");
    let same_page = client
        .execute("return window.tetherNotReloaded === true;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(
        same_page,
        serde_json::Value::Bool(true),
        "the page reloaded"
    );
    client
        .find(Locator::Css(
            r#"[data-provider="demo"] [data-action="refresh"]"#,
        ))
        .await
        .expect("refresh button when connected");
    if std::env::var_os("TETHER_SCREENSHOT").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        screenshot(&client, &path).await;
    }

    // Disconnect asks for confirmation first.
    client
        .find(Locator::Css(
            r#"[data-provider="demo"] details[data-action="disconnect"] > summary"#,
        ))
        .await
        .expect("disconnect summary")
        .click()
        .await
        .expect("open the confirmation");
    wait()
        .for_element(Locator::Css(
            r#"[data-provider="demo"] [data-action="confirm-disconnect"]"#,
        ))
        .await
        .expect("confirm button")
        .click()
        .await
        .expect("confirm disconnect");
    wait()
        .for_element(Locator::Css(
            r#"[data-provider="demo"][data-status="not_connected"]"#,
        ))
        .await
        .expect("the demo card, not connected again");

    client.close().await.expect("end the browser session");
}

/// Signs `email` in through the login form; the browser lands on the
/// dashboard.
pub(crate) async fn sign_in(client: &Client, address: &str, email: &str, password: &str) {
    let wait = || client.wait().at_most(WAIT);
    client
        .goto(&format!("{address}/login"))
        .await
        .expect("login page");
    for (field, value) in [("#email", email), ("#password", password)] {
        wait()
            .for_element(Locator::Css(field))
            .await
            .expect("a login field")
            .send_keys(value)
            .await
            .expect("type into the login form");
    }
    client
        .find(Locator::Css("#login-submit"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("log in");
    wait()
        .for_element(Locator::Css("[data-provider]"))
        .await
        .expect("a card on the dashboard");
}

#[actix_web::test]
async fn admin_gives_one_account_settings_of_its_own_on_its_card() {
    let Some((client, _driver)) = browser().await else {
        return;
    };
    let (app, _fake, key) =
        crate::internal_api::integrations::app(Backend::Sqlite, true, &[]).await;
    let account = app.acme_connection("acme").account_id.to_string();
    let shared = serde_json::json!({"enabled": true, "settings": {"pipeline_id": "pipe-all"}});
    let (code, _) = app
        .put_json("/api/v1/tenants/acme/integrations/acme", &key, shared)
        .await;
    assert_eq!(code, 200);
    sign_in(
        &client,
        &app.address,
        crate::helpers::OWNER,
        crate::helpers::PASSWORD,
    )
    .await;
    let wait = || client.wait().at_most(WAIT);
    let item = format!(r#"[data-provider="acme"] [data-account="{account}"]"#);
    let within = |rest: &str| format!("{item} {rest}");

    // Folded until asked for; the empty field says what applies instead.
    let pipeline = client
        .find(Locator::Css(&within(
            r#"input[name="setting.pipeline_id"]"#,
        )))
        .await
        .expect("the account's pipeline field");
    assert!(!pipeline.is_displayed().await.expect("displayed?"));
    client
        .find(Locator::Css(&within("details.account-settings > summary")))
        .await
        .expect("the account's settings")
        .click()
        .await
        .expect("open them");
    assert!(pipeline.is_displayed().await.expect("displayed?"));
    assert_eq!(
        pipeline.attr("placeholder").await.expect("placeholder"),
        Some("As for all accounts: pipe-all".into())
    );
    pipeline
        .send_keys("pipe-own")
        .await
        .expect("type a pipeline");
    client
        .find(Locator::Css(&within(r#"select[name="setting.notify"]"#)))
        .await
        .expect("the account's yes/no")
        .select_by_value("false")
        .await
        .expect("choose No");
    client
        .find(Locator::Css(&within(
            r#"[data-action="save-account-settings"]"#,
        )))
        .await
        .expect("the account's save button")
        .click()
        .await
        .expect("save");
    wait()
        .for_element(Locator::XPath(
            r#"//*[contains(., "Acme CRM settings of")]"#,
        ))
        .await
        .expect("the saved flash");
    let (_, body) = app
        .get_json(
            &format!("/api/v1/tenants/acme/integrations/acme/accounts/{account}"),
            &key,
        )
        .await;
    assert_eq!(
        body["settings"],
        serde_json::json!({"pipeline_id": "pipe-own", "notify": false})
    );
    // Drawn again as saved.
    let value = client
        .find(Locator::Css(&within(
            r#"input[name="setting.pipeline_id"]"#,
        )))
        .await
        .expect("the pipeline field again")
        .prop("value")
        .await
        .expect("its value");
    assert_eq!(value.as_deref(), Some("pipe-own"));
    client.close().await.expect("end the browser session");
}
