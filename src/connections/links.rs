//! Connect links: single-use URLs a person opens to connect a provider for a
//! tenant, issued by the CRM (the chatbot sends them).

use crate::app::App;
use crate::crypto::Secret;
use crate::db::models::connect_link::ConnectLink;
use crate::db::models::event::Actor;
use crate::error::{AppError, AppResult, Code};
use crate::ids::TenantId;
use crate::providers::{Flow, Provider};
use chrono::NaiveDateTime;

/// How long a link stays valid unless the caller says otherwise.
pub const DEFAULT_TTL_SECS: i64 = 900;

/// An issued link.
pub struct IssuedLink {
    /// The link itself: it carries the secret token.
    pub url: Secret<String>,
    pub expires_at: NaiveDateTime,
}

/// Issues a link to connect `provider` for the tenant, valid `ttl_secs`
/// (60 to 86400).
pub async fn issue(
    app: &App,
    tenant_id: TenantId,
    provider: &Provider,
    ttl_secs: i64,
    actor: &Actor,
) -> AppResult<IssuedLink> {
    if provider.flow != Flow::AuthorizationCode {
        return Err(AppError::bad_request(
            Code::UnsupportedFlow,
            format!(
                "{} is connected from its app install, not with a link",
                provider.display_name
            ),
        ));
    }
    if !(60..=86_400).contains(&ttl_secs) {
        return Err(AppError::bad_request(
            Code::InvalidExpiresIn,
            "expires_in is 60 to 86400 seconds",
        ));
    }
    let (key, actor) = (provider.key.clone(), actor.to_string());
    let (token, expires_at) = app
        .db(move |c| {
            Ok(ConnectLink::create(
                c,
                &tenant_id,
                &key,
                &actor,
                chrono::Duration::seconds(ttl_secs),
            )?)
        })
        .await?;
    Ok(IssuedLink {
        url: Secret::new(format!(
            "{}/connect/{}",
            app.settings.base_url(),
            token.expose()
        )),
        expires_at,
    })
}
