//! One error type for the whole service. Each error has a stable machine code,
//! an HTTP status and a message fit for the user; the cause chain goes to the
//! log and never into a response.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use std::fmt;

pub mod fault;

/// Every machine code an error can carry: the `code` of a JSON error body,
/// stable for clients. One list, so that no caller invents one by typo and
/// control flow compares variants, not strings; the OpenAPI document lists
/// the same codes.
macro_rules! codes {
    ($($variant:ident => $text:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order of the list.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients see it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    AlreadyRevoked => "already_revoked",
    ConcurrentUpdate => "concurrent_update",
    DatabaseUnavailable => "database_unavailable",
    DecryptionFailed => "decryption_failed",
    Forbidden => "forbidden",
    InsufficientScope => "insufficient_scope",
    Internal => "internal",
    InvalidAccount => "invalid_account",
    InvalidClient => "invalid_client",
    InvalidCode => "invalid_code",
    InvalidCursor => "invalid_cursor",
    InvalidDecision => "invalid_decision",
    InvalidEmail => "invalid_email",
    InvalidEmbedOrigin => "invalid_embed_origin",
    InvalidExpiresIn => "invalid_expires_in",
    InvalidForm => "invalid_form",
    InvalidGrant => "invalid_grant",
    InvalidImport => "invalid_import",
    InvalidInstance => "invalid_instance",
    InvalidInstall => "invalid_install",
    InvalidWebhook => "invalid_webhook",
    InvalidWebhookSignature => "invalid_webhook_signature",
    AccountBoundElsewhere => "account_bound_elsewhere",
    InvalidJson => "invalid_json",
    InvalidLink => "invalid_link",
    InvalidMethod => "invalid_method",
    InvalidMinTtl => "invalid_min_ttl",
    InvalidName => "invalid_name",
    InvalidPath => "invalid_path",
    InvalidQuery => "invalid_query",
    InvalidRedirectUri => "invalid_redirect_uri",
    InvalidRequest => "invalid_request",
    InvalidReturnTo => "invalid_return_to",
    InvalidScope => "invalid_scope",
    InvalidTags => "invalid_tags",
    InvalidSettings => "invalid_settings",
    InvalidSsoToken => "invalid_sso_token",
    InvalidState => "invalid_state",
    InvalidStatus => "invalid_status",
    InvalidTenant => "invalid_tenant",
    InvalidToken => "invalid_token",
    IssuerMismatch => "issuer_mismatch",
    IssuerMissing => "issuer_missing",
    KeyUnavailable => "key_unavailable",
    LeaseLost => "lease_lost",
    LocationUnavailable => "location_unavailable",
    MethodNotAllowed => "method_not_allowed",
    MissingScope => "missing_scope",
    NeedsReconnect => "needs_reconnect",
    NoIdentityLookup => "no_identity_lookup",
    NotFound => "not_found",
    NotConnected => "not_connected",
    NotRefreshable => "not_refreshable",
    NotSiteOwner => "not_site_owner",
    OauthConnected => "oauth_connected",
    ProviderBudgetSpent => "provider_budget_spent",
    ProviderDisabled => "provider_disabled",
    ProviderError => "provider_error",
    ProviderMisconfigured => "provider_misconfigured",
    ProviderMismatch => "provider_mismatch",
    ProviderRedirected => "provider_redirected",
    ProviderResponseTooLarge => "provider_response_too_large",
    ProviderUnavailable => "provider_unavailable",
    ProviderUnreachable => "provider_unreachable",
    RateLimited => "rate_limited",
    RefreshFailed => "refresh_failed",
    RefreshInProgress => "refresh_in_progress",
    SettingsTooLarge => "settings_too_large",
    SsoOriginRefused => "sso_origin_refused",
    ShuttingDown => "shutting_down",
    TenantExists => "tenant_exists",
    TokenRefused => "token_refused",
    Unauthorized => "unauthorized",
    UnknownInstall => "unknown_install",
    UnsupportedFlow => "unsupported_flow",
    UserExists => "user_exists",
    WebhookStale => "webhook_stale",
    WrongApp => "wrong_app",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

pub type AppResult<T> = Result<T, AppError>;

type Cause = Box<dyn std::error::Error + Send + Sync>;

pub struct AppError {
    status: StatusCode,
    code: Code,
    message: String,
    retry_after: Option<u64>,
    cause: Option<Cause>,
}

impl AppError {
    fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// A refusal with its own status and code (a provider's webhook: 401 for
    /// its signature, 403 for another app, 404 for an unknown account).
    pub fn refused(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self::new(status, code, message)
    }

    /// 400: the request itself is wrong; `message` says how.
    pub fn bad_request(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::Forbidden, message)
    }
    /// 403 with a code of its own (an API key without the route's scope,
    /// or limited to other providers).
    pub fn forbidden_as(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotFound, message)
    }
    /// 404 with a code of its own (an install, a provider's account).
    pub fn not_found_as(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// The tenant and provider exist, but the tenant has no connection to
    /// it: distinct from an unknown tenant or provider, and saying how a
    /// person connects it.
    pub fn not_connected() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Code::NotConnected,
            "this tenant has not connected this provider; send a person a connect link (POST /api/v1/tenants/{tenant}/connect-links)",
        )
    }
    /// As [`AppError::not_connected`], saying what exactly is missing.
    pub fn not_connected_because(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotConnected, message)
    }
    /// The tenant switched the provider off (its integration settings):
    /// distinct from a provider the operator has not enabled (a 404). A 409,
    /// like `needs_reconnect`: the request is right, the state of the
    /// tenant's integration refuses it until a person changes it.
    pub fn provider_disabled(display_name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            Code::ProviderDisabled,
            format!(
                "this tenant has switched {display_name} off; an admin of the tenant can switch it on again on the integrations page (or PUT /api/v1/tenants/{{tenant}}/integrations/{{provider}} with \"enabled\": true)"
            ),
        )
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::MethodNotAllowed,
            message,
        )
    }
    pub fn conflict(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many attempts; try again shortly",
        );
        e.retry_after = Some(retry_after);
        e
    }
    /// 502: a provider failed us; `message` says what the user can do.
    pub fn bad_gateway(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }
    /// 503 with `Retry-After`: the service or a provider cannot do this now.
    pub fn unavailable(code: Code, message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after);
        e
    }
    /// 503 `database_unavailable`: the database cannot be reached now.
    pub fn database_unavailable() -> Self {
        AppError::unavailable(
            Code::DatabaseUnavailable,
            "the database is not reachable right now",
            DATABASE_RETRY_AFTER_SECS,
        )
    }
    /// 500: something on our side; the user sees a generic message.
    pub fn internal(cause: impl Into<Cause>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "something went wrong on our side; it has been logged",
        );
        e.cause = Some(cause.into());
        e
    }

    /// Attaches a cause for the log.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// An error with exactly these parts (for outcomes shared between callers).
    pub fn rebuild(
        status: StatusCode,
        code: Code,
        message: String,
        retry_after: Option<u64>,
    ) -> Self {
        let mut e = Self::new(status, code, message);
        e.retry_after = retry_after;
        e
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The code as clients see it.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The code itself (for errors rebuilt from their parts).
    pub fn code_kind(&self) -> Code {
        self.code
    }

    /// Whether this is an error of `code`: what control flow asks.
    pub fn is(&self, code: Code) -> bool {
        self.code == code
    }

    /// The service or a provider cannot do this now (a 503 with
    /// `Retry-After`), as opposed to a refusal.
    pub fn is_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Logs it as an error page or a JSON answer of it would.
    pub fn log(&self) {
        match &self.cause {
            // Said once when the database goes and comes back (`db::health`);
            // each request it fails is a detail.
            Some(cause) if self.code == Code::DatabaseUnavailable => log::debug!(
                "{} ({}): {}",
                self.code,
                self.message,
                chain(cause.as_ref())
            ),
            Some(cause) if self.status.is_server_error() => {
                log::error!(
                    "{} ({}): {}",
                    self.code,
                    self.message,
                    chain(cause.as_ref())
                )
            }
            Some(cause) => log::debug!(
                "{} ({}): {}",
                self.code,
                self.message,
                chain(cause.as_ref())
            ),
            None if self.status.is_server_error() => log::error!("{}: {}", self.code, self.message),
            None => {}
        }
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )?;
        if let Some(c) = &self.cause {
            write!(f, " (cause: {})", chain(c.as_ref()))?;
        }
        Ok(())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// The JSON form, used under `/api` and for JSON routes.
    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        })
    }
}

/// The body of every JSON error: `{"error": {"code", "message"}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// A stable machine code, and a message fit for the user.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    pub code: Code,
    pub message: &'a str,
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => AppError::not_found("not found"),
            // A row referring to one that is gone: the tenant (or the
            // connection) was removed while this request was under way.
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => AppError::not_found(
                "what this request refers to was removed meanwhile (a tenant removal, or a disconnect)",
            )
            .with_cause(e),
            e => match fault::fault_of(&e) {
                Some(fault::Fault::Unreachable) => {
                    AppError::database_unavailable().with_cause(e)
                }
                Some(fault::Fault::Unwritable) => AppError::unavailable(
                    Code::DatabaseUnavailable,
                    "the database cannot take writes right now",
                    DATABASE_RETRY_AFTER_SECS,
                )
                .with_cause(e),
                None => AppError::internal(e),
            },
        }
    }
}

/// What a caller is told to wait when the database is away: outages worth
/// riding out last seconds (a failover, a lock), and an answer held in
/// memory is served on the next try.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl From<r2d2::Error> for AppError {
    fn from(e: r2d2::Error) -> Self {
        AppError::database_unavailable().with_cause(e)
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        AppError::internal(e.to_string())
    }
}

impl From<crate::crypto::CryptoError> for AppError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        // A key this instance lacks: the row is fine, and an instance that
        // has the key serves it (a key rollout out of order). This row fails
        // here, nothing else does.
        if let crate::crypto::CryptoError::UnknownKey(kid) = &e {
            return AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::KeyUnavailable,
                format!(
                    "this connection's credentials are sealed with encryption key '{kid}', which this Tether instance lacks (another instance seals with it); an operator has to add '{kid}' to this instance's TETHER_ENCRYPTION_KEYS"
                ),
            )
            .with_cause(e);
        }
        let mut err = AppError::internal(e);
        err.code = Code::DecryptionFailed;
        err.message =
            "stored credentials could not be decrypted; an operator has to check the key ring"
                .into();
        err
    }
}

/// An error and its causes on one line, `: `-joined, with every URL taken
/// out (a URL can carry a token or a secret in its query): "error sending
/// request: client error (Connect): tcp connect error: Connection refused
/// (os error 111)" tells a refused connection from a failed name lookup or
/// a refused certificate, where the outermost message alone does not.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = without_urls(&err.to_string());
        // Some layers repeat their source's message in their own.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// `text` on one line, each word that holds `://` replaced by `<url>`.
fn without_urls(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            if word.contains("://") {
                let open = word.starts_with('(');
                let close = word.ends_with(')');
                format!(
                    "{}<url>{}",
                    if open { "(" } else { "" },
                    if close { ")" } else { "" }
                )
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The same error rendered as an HTML page, for browser routes.
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl fmt::Debug for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    /// What happened, in a few words a person reads first.
    headline: &'static str,
    status: u16,
    reason: &'a str,
    message: &'a str,
    code: &'a str,
}

/// An error page's headline: what happened, before the sentence that says
/// why and what to do (the HTTP status is kept under "Details").
fn headline(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "That did not work",
        401 | 403 => "Not allowed",
        404 => "Nothing here",
        405 => "Not like this",
        409 => "Already taken care of",
        410 => "This has expired",
        413 => "Too much at once",
        429 => "Too many tries",
        502 | 504 => "A service is not answering",
        503 => "Not available right now",
        _ => "Something went wrong on our side",
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        // A page that needs a signed-in admin sends the browser to sign in.
        if self.0.status == StatusCode::UNAUTHORIZED {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish();
        }
        let page = ErrorPage {
            headline: headline(self.0.status),
            status: self.0.status.as_u16(),
            reason: self.0.status.canonical_reason().unwrap_or("Error"),
            message: &self.0.message,
            code: self.0.code.as_str(),
        };
        let body = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", page.status, page.reason));
        let mut res = HttpResponse::build(self.0.status);
        if let Some(secs) = self.0.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.content_type("text/html; charset=utf-8").body(body)
    }
}

/// Result of an HTML handler.
pub type PageResult<T> = Result<T, PageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn std::error::Error + 'static>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn a_chain_keeps_every_cause_on_one_line_without_urls() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection\nrefused");
        let e = Layer(
            "error sending request for url (https://h.example/t?code=s3cret)",
            Some(Box::new(Layer(
                "tcp connect error",
                Some(Box::new(Layer(
                    "tcp connect error",
                    Some(Box::new(refused)),
                ))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "error sending request for url (<url>): tcp connect error: Connection refused"
        );
    }
}
