//! The connections service: what the browser routes and the internal API
//! both do with a tenant's connections. Handlers authenticate, call one
//! function here, and render its answer; nothing here knows HTTP routing.
//!
//! - `status`: the status view of a provider's accounts;
//! - `connect`: starting and completing a connection (authorization code,
//!   connect links, client-credentials instances), saving a grant;
//! - `manage`: which account, the default account, disconnecting;
//! - `links`: issuing connect links;
//! - `installs`: installs started at the provider (GoHighLevel's
//!   Marketplace), held until a tenant claims them, and swept;
//! - `app_webhooks`: the provider's signed app webhooks (install, uninstall);
//! - `proxy`: calling a provider's API with a tenant's token.

pub mod app_webhooks;
pub mod connect;
pub mod installs;
pub mod links;
pub mod manage;
pub mod proxy;
pub mod status;
