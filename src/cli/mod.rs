//! The `tether` command line. Every command prints what it did; a secret is
//! printed once, alone on the last line.
//!
//! Every command but `config` first says on stderr which configuration it
//! used. Lists print aligned columns, or with `--json` one JSON array on
//! stdout. Exit codes: 0 done, 1 error, 2 usage (bad arguments, or an
//! irreversible command without a terminal to confirm on and without
//! `--yes`), 3 done, but some revocations at a provider failed or some
//! import lines were refused.
//!
//! One file per question: `args` (the commands and their arguments, as clap
//! reads them), `output` (columns, JSON, times, confirmation, exit codes),
//! `database` (the connection a command works on), then one file per
//! command group: `serve`, `backup` (and restore), `tenants`, `users`,
//! `api_keys`, `keys`, `connections` (list and import), `providers`,
//! `webhooks` and `doctor`. This file parses, loads the settings and
//! dispatches.

mod api_keys;
mod args;
mod backup;
mod connections;
mod database;
mod doctor;
mod keys;
mod output;
mod providers;
mod serve;
mod tenants;
mod users;
mod webhooks;

pub use args::{
    ApiKeyCommand, Cli, Command, ConnectionsCommand, KeysCommand, ProvidersCommand, TenantCommand,
    UserCommand, WebhooksCommand,
};

use crate::config::Settings;
use crate::startup::{self, Use};
use api_keys::api_key;
use backup::{backup, restore};
use clap::Parser;
use connections::{connections_import, connections_list};
use doctor::doctor;
use keys::keys;
use output::{Stop, USAGE};
use providers::providers_list;
use serve::serve;
use std::process::ExitCode;
use tenants::tenant;
use users::user;
use webhooks::webhooks;

/// Parses the command line, loads settings, sets up logging, runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The table must be readable whatever the configuration's state.
    if matches!(cli.command, Some(Command::Config)) {
        print!("{}", crate::config::table());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprint!("tether: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::logging::init(&settings.log_filter, settings.log_format);
    crate::logging::say(
        settings.log_format,
        log::Level::Info,
        &format!(
            "tether: {}",
            configuration_used(&settings, cli.config.as_deref())
        ),
    );
    for warning in &settings.warnings {
        log::warn!("configuration: {warning}");
    }
    let format = settings.log_format;
    let say = |message: String| crate::logging::say(format, log::Level::Error, &message);
    match run(cli.command.unwrap_or(Command::Serve), settings) {
        Ok(code) => code,
        Err(Stop::Error(e)) => {
            say(format!("tether: error: {e}"));
            ExitCode::FAILURE
        }
        Err(Stop::Usage(e)) => {
            say(format!("tether: {e}"));
            ExitCode::from(USAGE)
        }
    }
}

/// The line every command but `config` starts with on stderr: the mode, the
/// database (never its user, password or query) and the file read.
fn configuration_used(settings: &Settings, file: Option<&std::path::Path>) -> String {
    let env = if settings.is_production() {
        "production"
    } else {
        "development"
    };
    let database = crate::db::Backend::from_url(settings.database_url.expose())
        .map_or_else(|_| "an unknown database".to_string(), |b| b.describe());
    match file {
        Some(f) => format!("{env}, {database} (config file {})", f.display()),
        None => format!("{env}, {database}"),
    }
}

fn run(command: Command, settings: Settings) -> Result<ExitCode, Stop> {
    match command {
        Command::Serve => serve(settings)
            .map(|_| ExitCode::SUCCESS)
            .map_err(Stop::from),
        Command::Migrate => {
            // Says so whether or not there was anything to apply.
            let ctx = startup::prepare_for(settings, Use::Migrate)?;
            println!(
                "database ({}) is migrated to the latest schema",
                ctx.backend
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(c) => {
            let purpose = match c {
                TenantCommand::List { .. } | TenantCommand::Remove { dry_run: true, .. } => {
                    Use::Read
                }
                _ => Use::Write,
            };
            tenant(c, &startup::prepare_for(settings, purpose)?)
        }
        Command::User(c) => {
            let purpose = match c {
                UserCommand::List { .. } => Use::Read,
                _ => Use::Write,
            };
            user(c, &startup::prepare_for(settings, purpose)?)
        }
        Command::ApiKey(c) => {
            let purpose = match c {
                ApiKeyCommand::List { .. } => Use::Read,
                _ => Use::Write,
            };
            api_key(c, &startup::prepare_for(settings, purpose)?)
                .map(|_| ExitCode::SUCCESS)
                .map_err(Stop::from)
        }
        Command::Keys(c) => Ok(keys(c, settings)?),
        Command::Providers(ProvidersCommand::List { json }) => providers_list(settings, json)
            .map(|_| ExitCode::SUCCESS)
            .map_err(Stop::from),
        Command::Connections(ConnectionsCommand::List {
            tenant,
            provider,
            status,
            limit,
            json,
        }) => {
            let filter = [
                ("tenant", tenant.map(|t| t.to_string())),
                ("provider", provider),
                ("status", status),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .chain([("limit".to_string(), limit.to_string())])
            .collect();
            connections_list(filter, json, &startup::prepare_for(settings, Use::Read)?)
                .map(|_| ExitCode::SUCCESS)
                .map_err(Stop::from)
        }
        Command::Connections(ConnectionsCommand::Import { file, dry_run }) => {
            let purpose = if dry_run { Use::Read } else { Use::Write };
            Ok(connections_import(
                &file,
                dry_run,
                &startup::prepare_for(settings, purpose)?,
            )?)
        }
        Command::Webhooks(c) => {
            let purpose = match c {
                WebhooksCommand::List { .. } | WebhooksCommand::Held { .. } => Use::Read,
                WebhooksCommand::Retry { .. } => Use::Write,
            };
            webhooks(c, &startup::prepare_for(settings, purpose)?)
                .map(|_| ExitCode::SUCCESS)
                .map_err(Stop::from)
        }
        Command::Doctor => Ok(doctor(settings)),
        Command::Config => {
            print!("{}", crate::config::table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup {
            file,
            pages_per_step,
        } => backup(&settings, &file, pages_per_step)
            .map(|_| ExitCode::SUCCESS)
            .map_err(Stop::from),
        Command::Restore {
            file,
            pages_per_step,
        } => restore(&settings, &file, pages_per_step)
            .map(|_| ExitCode::SUCCESS)
            .map_err(Stop::from),
    }
}
