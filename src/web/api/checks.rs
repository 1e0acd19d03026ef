//! Checking a connection's token with its provider now.

use super::errors::{NoValidKey, OtherTenant};
use super::params::{AccountQuery, ConnectionPath};
use super::rights::{ForConnection, Scoped, StatusRead};
use crate::app::App;
use crate::connections::check::{self, Checked, Outcome};
use crate::connections::status::{self, PublicStatus};
use crate::error::{AppResult, ErrorBody};
use crate::web::http::{account_param, no_store, rfc3339};
use actix_web::{post, web, HttpResponse};

/// What a check found.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CheckAnswer {
    /// `valid`: the provider accepts the token; `revoked`: it no longer
    /// accepts the grant (the connection needs reconnecting); `refused`: it
    /// answered without vouching for the token or saying the grant is gone;
    /// `unreachable`: no answer to judge by.
    outcome: Outcome,
    /// The account as the provider names it now; null unless `valid`.
    account: Option<NamedAccount>,
    /// Whether the provider names the connection's own account; null when
    /// it names none, or did not accept the token.
    same_account: Option<bool>,
    /// The account id of the connection checked.
    connection_account: String,
    /// Whether a refresh ran because the provider refused the access token
    /// (it tells a lapsed token from a revoked grant).
    refreshed: bool,
    /// The connection's status afterwards.
    status: PublicStatus,
    message: String,
    #[schema(format = DateTime)]
    checked_at: String,
}

/// An account as the provider names it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct NamedAccount {
    id: Option<String>,
    name: Option<String>,
}

impl CheckAnswer {
    fn of(checked: Checked) -> CheckAnswer {
        let account = (checked.outcome == Outcome::Valid).then(|| NamedAccount {
            id: checked.account_id.as_ref().map(ToString::to_string),
            name: checked.account_name.clone(),
        });
        CheckAnswer {
            outcome: checked.outcome,
            account,
            same_account: checked.same_account,
            connection_account: checked.connection.account_id.to_string(),
            refreshed: checked.refreshed,
            status: status::public_status(Some(&checked.connection)),
            message: checked.message,
            checked_at: rfc3339(checked.checked_at),
        }
    }
}

/// Check a connection's token with the provider now
///
/// Asks the provider's account lookup (the one a connect names the account
/// with) with the stored access token of the default account (or of
/// `account`), and says what it found. Changes nothing, except when the
/// provider refuses the access token: a connection that can be refreshed
/// is refreshed then (a lapsed token is renewed; a refused refresh marks it
/// `needs_reconnect`, with its event), and one that cannot (a private token,
/// a provider whose tokens do not expire) is marked `needs_reconnect`, with
/// its event.
#[utoipa::path(
    params(ConnectionPath, AccountQuery),
    responses(
        (status = 200, description = "What the provider said", body = CheckAnswer),
        (status = 400, description = "An invalid `account`", body = ErrorBody),
        NoValidKey,
        OtherTenant,
        (status = 404, description = "No such tenant, provider or connection", body = ErrorBody),
        (status = 409, description = "`no_identity_lookup`: the provider has no account lookup Tether can ask for this account", body = ErrorBody),
        (status = 503, description = "The database is unreachable, or a refresh of the connection is under way", body = ErrorBody),
    ),
    security(("apiKey" = ["status:read"]))
)]
#[post("/tenants/{tenant}/connections/{provider}/check")]
pub(super) async fn check_connection(
    state: web::Data<App>,
    target: ForConnection<Scoped<StatusRead>>,
    query: web::Query<AccountQuery>,
) -> AppResult<HttpResponse> {
    let account = account_param(query.account.as_deref())?;
    let ForConnection {
        key: caller,
        tenant: tenant_id,
        provider,
    } = target;
    let app = state.into_inner();
    let checked = check::check(
        &app,
        &tenant_id,
        &provider,
        account.as_ref(),
        &caller.actor(),
    )
    .await?;
    Ok(no_store(HttpResponse::Ok().json(CheckAnswer::of(checked))))
}
