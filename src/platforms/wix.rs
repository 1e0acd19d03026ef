//! Wix: an app is installed on a site from Wix's side, and a site is bound
//! to a tenant only from the artefact Wix signs: the `instance` parameter it
//! adds to the app's dashboard page, `signature "." payload`, where the
//! payload is base64url JSON holding `instanceId` and `signDate`, and the
//! signature is base64url HMAC-SHA256 over the payload's text with the
//! app's secret (PROVIDERS.md; the one place this scheme lives). An instance
//! id alone is an identifier, not a proof, so no route takes one. Wix signs
//! the same `instance` for every iframe of the app, a site visitor's
//! included, so only the site's owner's binds a site: `permissions` is
//! `OWNER`, a Wix user id (`uid`) is present, and no anonymous visitor id
//! (`aid`). The owner's `uid` (and `siteMemberId`, when the instance carries
//! one) are kept as the connection's metadata. Tokens are
//! minted for the site with the app's client credentials, at connect and at
//! every renewal; there is no refresh token.

use crate::app::App;
use crate::error::{AppError, AppResult, Code};
use crate::ids::AccountId;
use crate::oauth::client::{self, ProviderError};
use crate::oauth::token::{pointer_str, TokenResponse};
use crate::oauth::{provider_failure, Authorized};
use crate::platform::{Answer, Due, Platform, SignedInstall};
use crate::providers::Provider;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old a signed instance may be: long enough to sign in first, short
/// enough that one seen in a log or a history is soon worthless.
pub const MAX_AGE: Duration = Duration::hours(1);

/// How far ahead of our clock a signing date may be.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// The longest artefact taken (it is kept in the session while the admin
/// signs in, and a cookie holds 4 KiB).
pub const MAX_LEN: usize = 2048;

/// What a verified artefact says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInstance {
    pub instance_id: AccountId,
    pub signed_at: DateTime<Utc>,
    /// The Wix user id of the site's owner who opened the app.
    pub owner_uid: String,
    /// The site member id, when the instance carries one.
    pub site_member_id: Option<String>,
}

/// The metadata fields the owner's ids are kept under.
const OWNER_UID: &str = "ownerUid";
const SITE_MEMBER_ID: &str = "siteMemberId";

/// An id from the payload as it may be stored: short and printable.
fn plain_id(doc: &serde_json::Value, field: &str) -> Option<String> {
    doc.get(field)
        .and_then(|v| v.as_str())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

fn not_owner() -> AppError {
    AppError::refused(
        actix_web::http::StatusCode::FORBIDDEN,
        Code::NotSiteOwner,
        "Only the site's owner can connect it. Ask the owner to open the app from the site's dashboard.",
    )
}

fn invalid(why: &str) -> AppError {
    AppError::bad_request(
        Code::InvalidInstall,
        format!("This install link is not valid ({why}). Open the app from your site's dashboard again."),
    )
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// base64url with or without padding.
fn decode(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// Checks an `instance` against the app's secret (in constant time), its
/// age, and its instance id.
pub fn verify_instance(
    secret: &[u8],
    instance: &str,
    now: DateTime<Utc>,
) -> AppResult<SignedInstance> {
    if instance.len() > MAX_LEN {
        return Err(invalid("too long"));
    }
    let (sig, payload) = instance
        .split_once('.')
        .ok_or_else(|| invalid("malformed"))?;
    let sig = decode(sig).ok_or_else(|| invalid("malformed"))?;
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    m.verify_slice(&sig).map_err(|_| invalid("bad signature"))?;
    let doc: serde_json::Value = decode(payload)
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| invalid("malformed payload"))?;
    let instance_id = doc
        .get("instanceId")
        .and_then(|v| v.as_str())
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| invalid("no instance id"))?;
    let signed_at = doc
        .get("signDate")
        .and_then(|v| v.as_str())
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| invalid("no signing date"))?;
    if signed_at > now + CLOCK_SKEW {
        return Err(invalid("signed in the future"));
    }
    if now - signed_at > MAX_AGE {
        return Err(invalid("expired"));
    }
    // A visitor (`aid`), a collaborator or a member is not the owner.
    let owner_uid = plain_id(&doc, "uid");
    let is_owner = doc.get("permissions").and_then(|v| v.as_str()) == Some("OWNER");
    let (Some(owner_uid), true, None) = (owner_uid, is_owner, doc.get("aid")) else {
        return Err(not_owner());
    };
    Ok(SignedInstance {
        instance_id: AccountId::known(instance_id),
        signed_at,
        owner_uid,
        site_member_id: plain_id(&doc, "siteMemberId"),
    })
}

/// Signs a payload as Wix does (for tests and the README's example).
pub fn sign_instance(secret: &[u8], payload: &serde_json::Value) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{}.{payload}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

pub struct Wix;

impl Platform<App> for Wix {
    fn name(&self) -> &'static str {
        "wix"
    }

    fn verify_install(
        &self,
        provider: &Provider,
        artefact: &str,
    ) -> Option<AppResult<SignedInstall>> {
        let Some((_, secret)) = provider.credentials.as_ref() else {
            return Some(Err(AppError::not_found("no such provider")));
        };
        Some(
            verify_instance(secret.expose().as_bytes(), artefact, Utc::now()).map(|signed| {
                let mut metadata = serde_json::Map::new();
                metadata.insert(OWNER_UID.into(), signed.owner_uid.into());
                if let Some(member) = signed.site_member_id {
                    metadata.insert(SITE_MEMBER_ID.into(), member.into());
                }
                SignedInstall {
                    account: signed.instance_id,
                    metadata,
                }
            }),
        )
    }

    fn connect_install<'a>(
        &'a self,
        http: &'a reqwest::Client,
        provider: &'a Provider,
        install: &'a SignedInstall,
    ) -> Option<BoxFuture<'a, AppResult<Authorized>>> {
        Some(
            async move {
                let mut authorized = connect_instance(http, provider, &install.account).await?;
                for (key, value) in &install.metadata {
                    authorized.metadata[key] = value.clone();
                }
                Ok(authorized)
            }
            .boxed(),
        )
    }

    fn renew<'a>(
        &'a self,
        http: &'a reqwest::Client,
        provider: &'a Provider,
        due: Due<'a>,
    ) -> Option<BoxFuture<'a, Answer>> {
        Some(
            async move {
                let instance = due
                    .row
                    .metadata()
                    .get(INSTANCE_ID)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ProviderError::GrantGone {
                        error: "no instanceId is stored for this connection".into(),
                    })?;
                client_credentials(http, provider, &instance).await
            }
            .boxed(),
        )
    }
}

/// The metadata field holding the site's instance id.
const INSTANCE_ID: &str = "instanceId";

/// Mints a token for one site instance with the app's credentials.
async fn client_credentials(
    http: &reqwest::Client,
    provider: &Provider,
    instance_id: &str,
) -> Result<TokenResponse, ProviderError> {
    let form = vec![
        ("grant_type".to_string(), "client_credentials".to_string()),
        ("instance_id".to_string(), instance_id.to_string()),
    ];
    client::token_response(
        provider,
        client::token_post(http, provider, &provider.token_url, form)?,
    )
    .await
}

/// Mints a token for a verified site instance (no browser redirect) and
/// looks the instance up.
async fn connect_instance(
    http: &reqwest::Client,
    provider: &Provider,
    instance_id: &AccountId,
) -> AppResult<Authorized> {
    let valid = (1..=128).contains(&instance_id.len())
        && instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(AppError::bad_request(
            Code::InvalidInstance,
            "an instance id is 1 to 128 letters, digits, '-' or '_'",
        ));
    }
    let response = client_credentials(http, provider, instance_id)
        .await
        .map_err(|e| provider_failure(provider, e))?;
    let identity = client::identity(
        http,
        provider,
        response.tokens.access_token.expose(),
        &response.raw,
    )
    .await
    .map_err(|e| provider_failure(provider, e))?;
    let account_name = provider
        .account_name
        .as_deref()
        .and_then(|p| identity.as_ref().and_then(|doc| pointer_str(doc, p)));
    let mut metadata = response.metadata(provider);
    metadata[INSTANCE_ID] = instance_id.as_str().into();
    Ok(Authorized {
        scopes: response
            .scopes
            .clone()
            .unwrap_or_else(|| provider.scopes.clone()),
        account_id: instance_id.clone(),
        account_name,
        metadata,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"the-app-secret";

    fn signed(id: &str, at: DateTime<Utc>) -> String {
        sign_instance(
            SECRET,
            &serde_json::json!({
                "instanceId": id, "signDate": at.to_rfc3339(), "uid": "u1", "permissions": "OWNER"
            }),
        )
    }

    #[test]
    fn a_signed_instance_verifies_and_anything_else_does_not() {
        let now = Utc::now();
        let ok = verify_instance(SECRET, &signed("inst-1", now), now).unwrap();
        assert_eq!(ok.instance_id, "inst-1");
        assert_eq!(ok.owner_uid, "u1");
        let refused = |instance: &str| {
            verify_instance(SECRET, instance, now)
                .unwrap_err()
                .message()
                .to_string()
        };
        assert!(refused(&sign_instance(
            b"other",
            &serde_json::json!({"instanceId": "inst-1", "signDate": now.to_rfc3339()})
        ))
        .contains("bad signature"));
        let genuine = signed("inst-1", now);
        let (sig, _) = genuine.split_once('.').unwrap();
        let (_, other_payload) = signed("inst-2", now)
            .split_once('.')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap();
        assert!(refused(&format!("{sig}.{other_payload}")).contains("bad signature"));
        assert!(
            refused(&signed("inst-1", now - MAX_AGE - Duration::seconds(1))).contains("expired")
        );
        assert!(refused(&signed("inst-1", now + Duration::minutes(10))).contains("future"));
        assert!(refused(&signed("../etc", now)).contains("no instance id"));
        assert!(refused(&sign_instance(
            SECRET,
            &serde_json::json!({"instanceId": "inst-1"})
        ))
        .contains("no signing date"));
        // Signed by Wix, but not opened by the site's owner.
        let date = now.to_rfc3339();
        for payload in [
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "aid": "visitor-1"}),
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u1"}),
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u1", "permissions": "CONTRIBUTOR"}),
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "permissions": "OWNER"}),
            serde_json::json!({"instanceId": "inst-1", "signDate": date, "uid": "u1", "permissions": "OWNER", "aid": "a1"}),
        ] {
            let e = verify_instance(SECRET, &sign_instance(SECRET, &payload), now).unwrap_err();
            assert_eq!(e.code(), "not_site_owner", "{payload}");
        }
        for junk in ["", "garbage", ".", "a.b", &"x".repeat(MAX_LEN + 1)] {
            assert_eq!(
                verify_instance(SECRET, junk, now).unwrap_err().code(),
                "invalid_install"
            );
        }
    }
}
