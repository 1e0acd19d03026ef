//! The connections service: what the browser routes and the internal API
//! both do with a tenant's connections. Handlers authenticate, call one
//! function here, and render its answer; nothing here knows HTTP routing.
//!
//! - `status`: the status view of a provider's accounts;
//! - `connect`: starting and completing a connection (authorization code,
//!   connect links, client-credentials instances), saving a grant;
//! - `grant`: the one door through which every grant is saved;
//! - `manage`: which account, the default account, disconnecting;
//! - `check`: a connection's token checked with its provider now;
//! - `import`: storing tokens the CRM kept itself before Tether;
//! - `private_token`: a token the account's owner made at the provider (an
//!   API key), checked and kept until an OAuth grant replaces it;
//! - `links`: issuing connect links;
//! - `integration`: a tenant's integration settings (enabled, preferences);
//! - `directory`: connections across tenants (who owns an account, what
//!   needs attention);
//! - `installs`: installs started at the provider (GoHighLevel's
//!   Marketplace), held until a tenant claims them, and swept;
//! - `proxy`: calling a provider's API with a tenant's token, retrying
//!   what the provider asks to be retried;
//! - `budget`: the provider's per-account budgets the proxy spends;
//! - `relay`: providers' app events relayed to the CRM, with the tenant
//!   and account they concern, or held until a tenant holds the account.

pub mod budget;
pub mod check;
pub mod connect;
pub mod directory;
pub mod grant;
pub mod import;
pub mod installs;
pub mod integration;
pub mod links;
pub mod manage;
pub mod private_token;
pub mod proxy;
pub mod relay;
pub mod status;
