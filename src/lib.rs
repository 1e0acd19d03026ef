//! Tether: keeps every tenant of a CRM connected to the OAuth platforms it uses.

pub mod api_keys;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod ids;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod offboarding;
pub mod platform;
pub mod platforms;
pub mod providers;
pub mod ratelimit;
#[cfg(test)]
mod redaction_tests;
pub mod refresh;
pub mod sso;
pub mod startup;
pub mod web;
pub mod webhooks;
pub mod workers;
