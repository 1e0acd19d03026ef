//! The path and query parameters several resources share.

/// `{tenant}`: the CRM's own id for the tenant.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct TenantPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    pub(super) tenant: String,
}

/// `{tenant}/connections/{provider}`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ConnectionPath {
    /// The CRM's external id of the tenant.
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    pub(super) tenant: String,
    /// A provider's key (`gohighlevel`, `hubspot`, ...).
    #[param(pattern = r"^[a-z][a-z0-9_-]{0,31}$")]
    pub(super) provider: String,
}

/// The `account` query parameter of the connection routes.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AccountQuery {
    /// The provider's account id of one of the tenant's connected accounts
    /// (e.g. a GoHighLevel location id). Without it: the tenant's default
    /// account. An account that is not connected is a 404.
    #[param(min_length = 1, max_length = 256)]
    pub(super) account: Option<String>,
}
