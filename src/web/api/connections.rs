//! A tenant's connections: their status, disconnect, the default account,
//! tokens imported from the CRM, and private tokens.

use super::errors::{DatabaseUnreachable, NoValidKey, NotAdminForTenant, OtherTenant};
use super::params::{AccountQuery, ConnectionPath, TenantPath};
use super::rights::{
    AdminKey, ConnectionsWrite, ForConnection, ForTenant, Importing, Scoped, StatusRead,
};
use crate::app::App;
use crate::connections::status::{self, StatusView};
use crate::connections::{import as importing, manage, private_token as private};
use crate::db::models::event::Actor;
use crate::error::{AppResult, ErrorBody};
use crate::ids::AccountId;
use crate::providers::Provider;
use crate::web::http::{account_param, no_store};
use actix_web::{delete, get, post, put, web, HttpResponse};

/// `{"connections": [...]}`: one status per enabled provider.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ConnectionList {
    connections: Vec<StatusView>,
}

/// Status of every enabled provider for the tenant
#[utoipa::path(
    params(TenantPath),
    responses(
        (status = 200, description = "One status per enabled provider", body = ConnectionList),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/tenants/{tenant}/connections")]
pub(super) async fn list(
    state: web::Data<App>,
    target: ForTenant<Scoped<StatusRead>>,
) -> AppResult<HttpResponse> {
    let tenant_id = target.tenant;
    let providers: Vec<_> = state
        .providers
        .all()
        .filter(|p| p.enabled() && target.key.caller.key.covers(p.key.as_str()))
        .cloned()
        .collect();
    let connections = state
        .db(move |c| {
            providers
                .iter()
                .map(|p| status::load(c, &tenant_id, p, None))
                .collect::<AppResult<Vec<_>>>()
        })
        .await?;
    Ok(no_store(
        HttpResponse::Ok().json(ConnectionList { connections }),
    ))
}

/// Status of one provider
///
/// Its default account, and the list of connected accounts; with `account`,
/// that account's status.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or account", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["status:read"]))
)]
#[get("/tenants/{tenant}/connections/{provider}")]
pub(super) async fn provider_status(
    state: web::Data<App>,
    target: ForConnection<Scoped<StatusRead>>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let ForConnection {
        tenant: tenant_id,
        provider,
        ..
    } = target;
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &provider, account.as_ref()))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

/// What a disconnect did.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Disconnected {
    provider: String,
    /// The account that was disconnected.
    #[schema(value_type = String)]
    disconnected: AccountId,
    /// The provider's status afterwards (its new default's).
    status: status::PublicStatus,
    /// The default account afterwards, if any is left.
    #[schema(value_type = Option<String>)]
    default: Option<AccountId>,
    message: String,
}

/// Disconnect an account
///
/// The default without `account`: revoke at the provider where supported,
/// then erase its tokens. When the default goes, the earliest-connected
/// other account becomes the default; the answer names it, so that no caller
/// assumes the provider is gone while another account now serves it.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "Disconnected", body = Disconnected),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or connection", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["connections:write"]))
)]
#[delete("/tenants/{tenant}/connections/{provider}")]
pub(super) async fn disconnect(
    state: web::Data<App>,
    target: ForConnection<Scoped<ConnectionsWrite>>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    let done = manage::disconnect(
        &state,
        &tenant_id,
        &provider,
        account.as_ref(),
        &caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(Disconnected {
        provider: provider.key.to_string(),
        disconnected: done.account_id,
        status: status::public_status(done.default.as_ref()),
        default: done.default.as_ref().map(|d| d.account_id.clone()),
        message: done.message,
    })))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DefaultRequest {
    /// The provider account id to serve when a caller names none.
    #[schema(min_length = 1, max_length = 256)]
    account: String,
}

/// Choose the tenant's default account of the provider
///
/// The one the token API, the proxy and the status serve when no account is
/// named. Refreshes never change it.
#[utoipa::path(
    params(ConnectionPath),
    request_body = DefaultRequest,
    responses(
        (status = 200, description = "The provider's status afterwards", body = StatusView),
        (status = 400, description = "An invalid body", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or account", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["connections:write"]))
)]
#[put("/tenants/{tenant}/connections/{provider}/default")]
pub(super) async fn set_default(
    state: web::Data<App>,
    target: ForConnection<Scoped<ConnectionsWrite>>,
    body: web::Json<DefaultRequest>,
) -> AppResult<HttpResponse> {
    let account = AccountId::parse(&body.account)?;
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    manage::choose_default(&state, &tenant_id, &provider, &account, &caller.actor()).await?;
    let p = provider.clone();
    let doc = state
        .db(move |c| status::load(c, &tenant_id, &p, None))
        .await?;
    Ok(no_store(HttpResponse::Ok().json(doc)))
}

/// Tokens the CRM stored itself, to import (the request is read by
/// `connections::import`, which refuses unknown fields and repeats no value).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportRequest {
    /// Visible ASCII, 1 to 8192 characters.
    #[schema(min_length = 1, max_length = 8192)]
    access_token: String,
    #[schema(min_length = 1, max_length = 8192)]
    refresh_token: Option<String>,
    /// Default `Bearer`.
    token_type: Option<String>,
    /// When the access token expires (RFC 3339). Not with `expires_in`.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Seconds from now until the access token expires. Not with `expires_at`.
    #[schema(minimum = 0)]
    expires_in: Option<i64>,
    /// The granted scopes (default: the provider's configured scopes).
    scopes: Option<Vec<String>>,
    /// The provider account; required for providers whose connections are
    /// per account.
    account: Option<ImportAccount>,
    /// Non-secret fields kept beside the connection (the fields the provider's `keep_fields` names).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// Overwrite an account that is already connected (default false: skip it).
    replace: Option<bool>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportAccount {
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    #[schema(max_length = 256)]
    name: Option<String>,
}

/// Whether an import stored its tokens.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ImportOutcome {
    Imported,
    /// The account is already connected (and `replace` was not asked).
    Skipped,
}

/// What became of an imported token that was due.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ImportRefresh {
    NotDue,
    Refreshed,
    Failed,
}

/// What an import did.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportAnswer {
    /// `imported`, or `skipped` (the account is already connected).
    outcome: ImportOutcome,
    /// The import overwrote a connected account (`replace`).
    replaced: bool,
    account: String,
    /// `not_due`, `refreshed` (the token had expired or was within the
    /// refresh margin, and was refreshed at once) or `failed` (see
    /// `refresh_error` and the status: the scheduler retries unless the
    /// provider said the grant is gone).
    refresh: ImportRefresh,
    refresh_error: Option<ImportRefreshError>,
    message: String,
    /// The account's status afterwards.
    status: StatusView,
}

impl ImportAnswer {
    fn of(done: &importing::Imported, provider: &Provider, status: StatusView) -> ImportAnswer {
        ImportAnswer {
            outcome: if done.imported() {
                ImportOutcome::Imported
            } else {
                ImportOutcome::Skipped
            },
            replaced: done.replaced(),
            account: done.account_id().to_string(),
            refresh: match &done.refresh {
                None => ImportRefresh::NotDue,
                Some(Ok(_)) => ImportRefresh::Refreshed,
                Some(Err(_)) => ImportRefresh::Failed,
            },
            refresh_error: match &done.refresh {
                Some(Err(e)) => Some(ImportRefreshError {
                    code: e.code(),
                    message: e.message().to_string(),
                }),
                _ => None,
            },
            message: done.message(provider),
            status,
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportRefreshError {
    code: &'static str,
    message: String,
}

/// Import a token set the CRM stored itself (admin keys only)
///
/// Checked first with the provider's account lookup (the token must be the
/// account's; an expired one is refused), then stored encrypted like any
/// connection; an account already connected is skipped (200, `outcome:
/// skipped`) unless `replace` is true. A token that expires within the
/// refresh margin is refreshed before the answer. No token appears in the
/// answer.
#[utoipa::path(
    params(ConnectionPath),
    request_body = ImportRequest,
    responses(
        (status = 201, description = "Imported as a new connection", body = ImportAnswer),
        (status = 200, description = "Imported over a connected account (`replace`), or skipped", body = ImportAnswer),
        (status = 400, description = "`invalid_import`, `invalid_account` (the provider names another account for the token) or `invalid_json`: nothing was stored", body = ErrorBody),
        NoValidKey,
        NotAdminForTenant,
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 409, description = "`account_bound_elsewhere`: another tenant holds the account", body = ErrorBody),
        (status = 502, description = "The provider's account lookup failed: nothing was stored", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["admin"]))
)]
#[post("/tenants/{tenant}/connections/{provider}/import")]
pub(super) async fn import(
    state: web::Data<App>,
    target: ForConnection<AdminKey<Importing>>,
    body: web::Json<serde_json::Value>,
) -> AppResult<HttpResponse> {
    let ForConnection {
        key,
        tenant: tenant_id,
        provider,
    } = target;
    let request = importing::Request::parse(&body)?;
    let actor = Actor::Import {
        by: key.caller.actor().to_string(),
    };
    let done = importing::import(&state, &tenant_id, &provider, request, &actor).await?;
    let (p, a) = (provider.clone(), done.account_id().clone());
    let status = state
        .db(move |c| status::load(c, &tenant_id, &p, Some(&a)))
        .await?;
    let created = done.imported() && !done.replaced();
    let answer = ImportAnswer::of(&done, &provider, status);
    Ok(no_store(if created {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    }))
}

/// A private token to store (read by `connections::private_token`, which
/// refuses unknown fields and repeats no value).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PrivateTokenRequest {
    /// The token its owner created at the provider (GoHighLevel: the
    /// location's Private Integration Token). Visible ASCII, 1 to 8192
    /// characters.
    #[schema(min_length = 1, max_length = 8192)]
    token: String,
    /// The provider account it is for (GoHighLevel: the location id).
    #[schema(min_length = 1, max_length = 256)]
    account: Option<String>,
}

/// Store an account's private token
///
/// For providers that take them (`private_tokens` in their preset:
/// GoHighLevel's Private Integration Tokens). The token is checked with the
/// provider's account lookup first; it is then served like any connection's
/// token (`kind: private_token`), never refreshed, and replaced in place by
/// an OAuth grant of the same account when one arrives. A second call
/// replaces the stored private token. No token appears in the answer.
#[utoipa::path(
    params(ConnectionPath),
    request_body = PrivateTokenRequest,
    responses(
        (status = 201, description = "Stored as a new connection", body = StatusView),
        (status = 200, description = "Stored over the account's earlier private token", body = StatusView),
        (status = 400, description = "`invalid_request`, `invalid_account`, `unsupported_flow` (the provider takes no private tokens) or `token_refused` (the provider's lookup refused the token, or it belongs to another account): nothing was stored", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 409, description = "`oauth_connected`: the account is connected through OAuth; `account_bound_elsewhere`: another tenant holds it", body = ErrorBody),
        (status = 502, description = "The provider's lookup failed", body = ErrorBody),
        DatabaseUnreachable,
    ),
    security(("apiKey" = ["connections:write"]))
)]
#[post("/tenants/{tenant}/connections/{provider}/private-token")]
pub(super) async fn private_token(
    state: web::Data<App>,
    target: ForConnection<Scoped<ConnectionsWrite>>,
    body: web::Json<serde_json::Value>,
) -> AppResult<HttpResponse> {
    let ForConnection {
        key,
        tenant: tenant_id,
        provider,
    } = target;
    let request = private::Request::parse(&body)?;
    let (row, replaced) =
        private::store(&state, &tenant_id, &provider, request, &key.actor()).await?;
    let status = StatusView::of(&provider, Some(&row));
    Ok(no_store(if replaced {
        HttpResponse::Ok().json(status)
    } else {
        HttpResponse::Created().json(status)
    }))
}
