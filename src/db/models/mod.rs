//! One module per table; each owns its queries.

pub mod account_setting;
pub mod activity;
pub mod api_key;
pub mod connect_link;
pub mod connection;
pub mod event;
pub mod instance;
pub mod integration_setting;
pub mod key_check;
pub mod oauth_state;
pub mod pending_install;
pub mod provider_flag;
pub mod seen_webhook;
pub mod sso_nonce;
pub mod tenant;
pub mod usage;
pub mod user;
pub mod webhook;
