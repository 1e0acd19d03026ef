//! The connections service: what the browser routes and the internal API
//! both do with a tenant's connections. Handlers authenticate, call one
//! function here, and render its answer; nothing here knows HTTP routing.
//!
//! - `status`: the status view of a provider's accounts;
//! - `agency`: GoHighLevel agencies' location tokens;
//! - `connect`: starting and completing a connection (authorization code,
//!   connect links, client-credentials instances), saving a grant;
//! - `manage`: which account, the default account, disconnecting;
//! - `links`: issuing connect links;
//! - `integration`: a tenant's integration settings (enabled, preferences);
//! - `directory`: connections across tenants (who owns an account, what
//!   needs attention);
//! - `proxy`: calling a provider's API with a tenant's token.

pub mod agency;
pub mod connect;
pub mod directory;
pub mod integration;
pub mod links;
pub mod manage;
pub mod proxy;
pub mod status;
