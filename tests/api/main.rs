//! Integration tests: the real server and binary on real SQLite and, when
//! TETHER_TEST_POSTGRES_URL is set, real PostgreSQL.

mod helpers;

mod accounts;
mod agencies;
mod backup;
mod browser;
mod ca_certs;
mod cli;
mod dashboard_browser;
mod demo;
mod embed;
mod events;
mod flow;
mod import;
mod internal_api;
mod keys;
mod layering;
mod marketplace;
mod metrics;
mod operators;
mod ops;
mod postgres_tls;
mod presets;
mod private_tokens;
mod processes;
mod quick_start;
mod refresh;
mod relay;
mod scheduler;
mod security;
mod signin;
mod startup;
mod storage;
mod token_cache;
mod ts_client;
mod upgrades;
mod usage;
mod webhooks;
