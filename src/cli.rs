//! The `tether` command line. Every command prints what it did; a secret is
//! printed once, alone on the last line.
//!
//! Every command but `config` first says on stderr which configuration it
//! used. Lists print aligned columns, or with `--json` one JSON array on
//! stdout. Exit codes: 0 done, 1 error, 2 usage (bad arguments, or an
//! irreversible command without a terminal to confirm on and without
//! `--yes`), 3 done, but some revocations at a provider failed or some
//! import lines were refused.

use crate::config::Settings;
use crate::db::models::{api_key::ApiKey, tenant::Tenant, user::User};
use crate::startup::{self, Application, Context, Use};
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version = crate::metrics::VERSION,
    about = "OAuth connections for every tenant of a CRM: connect, store encrypted, refresh, hand out tokens."
)]
pub struct Cli {
    /// TOML file with settings (keys are the variable names in lower case); the environment wins.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants (the CRM's client businesses).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage tenant admins who sign in to the settings pages.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys for the CRM's internal services.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Inspect and rotate the encryption key ring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show the provider catalogue.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Look at tenants' connections across tenants, and import tokens.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Look at webhook deliveries not yet made, and send given-up ones again.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Check the configuration, database, keys and providers; print what to fix.
    Doctor,
    /// Print every configuration variable with its default and meaning
    /// (also `tether help config`); reads no configuration.
    #[command(after_long_help = crate::config::table())]
    Config,
    /// Copy the SQLite database to FILE, consistently, while Tether serves
    /// (PostgreSQL: use pg_dump).
    Backup {
        /// Where to write the copy; an existing file is replaced once the copy is whole.
        file: PathBuf,
        /// Pages copied per step; a database larger than one step prints its progress on stderr.
        #[arg(long, default_value_t = crate::backup::PAGES_PER_STEP, value_parser = clap::value_parser!(i32).range(1..))]
        pages_per_step: i32,
    },
    /// Put a backup made by `tether backup` in place of the SQLite database;
    /// refused while an instance has it open, or when the key ring cannot open it.
    Restore {
        /// The backup file to put in place.
        file: PathBuf,
        /// Pages copied per step; a database larger than one step prints its progress on stderr.
        #[arg(long, default_value_t = crate::backup::PAGES_PER_STEP, value_parser = clap::value_parser!(i32).range(1..))]
        pages_per_step: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with the CRM's id for it.
    Add {
        /// The CRM's id for the tenant (1 to 128 letters, digits, '-', '_', '.' or ':').
        external_id: String,
        /// A name for people (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants, in the order of their ids.
    List {
        /// One JSON array on stdout: external_id, name, created_at.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every connection of a tenant at its provider, then erase the
    /// tenant and everything it had; prints what was done. It cannot be
    /// undone: asks on a terminal, else needs --yes. Exits 3 when a
    /// revocation failed (the tenant is erased all the same).
    Remove {
        /// The tenant's external id.
        external_id: String,
        /// Print what would be revoked and erased; change nothing (asks nothing).
        #[arg(long)]
        dry_run: bool,
        /// Do not ask: needed without a terminal.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Connections holding tokens, across tenants: tenant, provider,
    /// account, status, expiry and last error; in tenant id, provider and
    /// account id order.
    List {
        /// Only this tenant's connections.
        #[arg(long, value_name = "EXTERNAL_ID")]
        tenant: Option<String>,
        /// Only this provider's connections.
        #[arg(long, value_name = "KEY")]
        provider: Option<String>,
        /// connected, needs_reconnect or error (several separated by commas).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// The first this many rows, in the list's order.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// One JSON array on stdout: tenant, provider, account_id,
        /// account_name, status, expires_at, last_error.
        #[arg(long)]
        json: bool,
    },
    /// Import tokens stored before Tether: one JSON object a line (`-`:
    /// standard input). Exits 3 when a line was refused.
    Import {
        /// One import a line: {"tenant", "provider", "access_token", "refresh_token",
        /// "expires_at" or "expires_in", "scopes", "account": {"id", "name"}, "metadata", "replace"}.
        file: PathBuf,
        /// Check every line (tenants, providers, already connected) and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

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

/// Exit code of a command used wrongly (as clap's own).
const USAGE: u8 = 2;
/// Exit code of a command that did its work, but not all of it: a
/// revocation at a provider failed, or an import line was refused.
const PARTLY: u8 = 3;

/// Why a command stopped.
enum Stop {
    /// Something failed (exit 1).
    Error(String),
    /// The command needs another argument to go on (exit 2).
    Usage(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Stop {
        Stop::Error(e)
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

/// Asks on the terminal before what cannot be undone: the person types
/// `answer`. Without a terminal, only `yes` (the command's `--yes`) goes on.
fn confirm(question: &str, answer: &str, yes: bool, command: &str) -> Result<(), Stop> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Stop::Usage(format!(
            "{command} cannot be undone and there is no terminal to confirm on: pass --yes (nothing was changed)"
        )));
    }
    eprint!("{question} ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    if line.trim() == answer {
        Ok(())
    } else {
        Err(Stop::Error(format!(
            "not confirmed (the answer was not '{answer}'): nothing was changed"
        )))
    }
}

/// Prints `rows` in columns under `header`, each as wide as its widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// Prints `items` as one JSON array on stdout.
fn print_json(items: Vec<serde_json::Value>) {
    println!("{}", serde_json::Value::Array(items));
}

/// A time in a list: minutes, UTC.
fn minute(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A time in JSON: RFC 3339, UTC.
fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an admin for a tenant (prompts for the password unless --password-stdin).
    Add {
        /// The tenant the admin signs in to.
        #[arg(long, value_name = "EXTERNAL_ID")]
        tenant: String,
        /// The admin's email address, their sign-in name.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List admins, by tenant, then email.
    List {
        /// Only this tenant's admins.
        #[arg(long, value_name = "EXTERNAL_ID")]
        tenant: Option<String>,
        /// One JSON array on stdout: email, tenant, role, last_login_at.
        #[arg(long)]
        json: bool,
    },
    /// Sign an admin out everywhere: every session of theirs ends at its next request.
    SignOut {
        /// The admin's email address.
        email: String,
    },
    /// Remove an admin; their sessions end with them. It cannot be undone:
    /// asks on a terminal, else needs --yes.
    Remove {
        /// The admin's email address.
        email: String,
        /// Do not ask: needed without a terminal.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; the secret is printed once, on the last line.
    Create {
        /// What the key is for, to recognise it in the list.
        #[arg(long)]
        name: String,
        /// Limit the key to one tenant (default: all tenants).
        #[arg(long, value_name = "EXTERNAL_ID")]
        tenant: Option<String>,
        /// Allow tenant provisioning.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their secrets), newest first.
    List {
        /// One JSON array on stdout: prefix, name, tenant, admin, last_used_at, state.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its prefix (the key stays listed, as revoked).
    Revoke {
        /// The key's prefix, as `api-key list` shows it.
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Count encrypted rows per key id.
    Status {
        /// One JSON array on stdout: key_id, in_ring, primary, connections,
        /// oauth_states, pending_installs.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt every row under the primary (first) key, in batches.
    Rotate {
        /// Rows re-encrypted per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Every provider, enabled or not and why, with its redirect URI.
    List {
        /// One JSON array on stdout: key, name, enabled, disabled_reason, redirect_uri.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries not yet made, oldest first: the id the receiver sees, the
    /// event type, attempts, last error, and the next attempt or "given up".
    List {
        /// Only deliveries given up after the last attempt.
        #[arg(long)]
        given_up: bool,
        /// The first this many rows, oldest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// One JSON array on stdout: id, type, attempts, last_error,
        /// next_attempt_at, given_up, created_at.
        #[arg(long)]
        json: bool,
    },
    /// Make deliveries due now with their attempts counted afresh, for the
    /// running server to send again.
    Retry {
        /// Delivery ids, as `webhooks list` shows them (the payload's "id").
        #[arg(
            required_unless_present = "all_given_up",
            conflicts_with = "all_given_up"
        )]
        ids: Vec<String>,
        /// Every given-up delivery.
        #[arg(long)]
        all_given_up: bool,
    },
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
                ("tenant", tenant),
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
                WebhooksCommand::List { .. } => Use::Read,
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

/// A progress line on stderr after each step, for a copy of more than one step.
fn progress_line(what: &'static str, pages_per_step: i32) -> impl FnMut(crate::backup::Progress) {
    move |p| {
        if p.total > i64::from(pages_per_step) {
            eprintln!(
                "{what}: {} of {} pages ({}%)",
                p.copied,
                p.total,
                p.copied * 100 / p.total.max(1)
            );
        }
    }
}

fn backup(settings: &Settings, file: &std::path::Path, pages_per_step: i32) -> Result<(), String> {
    let done = crate::backup::backup(
        settings,
        file,
        pages_per_step,
        progress_line("backup", pages_per_step),
    )?;
    println!(
        "backed up {} to {}: {} pages, {} bytes, as of one moment",
        done.database.display(),
        file.display(),
        done.pages,
        done.bytes
    );
    println!(
        "keep the encryption keys with these ids beside it (TETHER_ENCRYPTION_KEYS): {}; without them the backup cannot be opened",
        done.key_ids.join(", ")
    );
    Ok(())
}

fn restore(settings: &Settings, file: &std::path::Path, pages_per_step: i32) -> Result<(), String> {
    // Checked before the key ring: on PostgreSQL there is nothing to restore.
    crate::backup::sqlite_path(settings)?;
    let ring = startup::existing_key_ring(settings)?.ok_or_else(|| {
        format!(
            "no key ring to check the backup with: set TETHER_ENCRYPTION_KEYS to the keys it was taken under{}",
            if settings.is_production() {
                String::new()
            } else {
                format!(
                    " (or put the development key file {} back)",
                    settings.data_dir.join(startup::DEV_KEY_FILE).display()
                )
            }
        )
    })?;
    let done = crate::backup::restore(
        settings,
        file,
        &ring,
        pages_per_step,
        progress_line("restore", pages_per_step),
    )?;
    println!(
        "restored {} into {}: {} pages; key ids in it: {}",
        file.display(),
        done.database.display(),
        done.pages,
        done.key_ids.join(", ")
    );
    if let Some(previous) = &done.previous {
        println!(
            "the database it replaced is kept as {}: delete it once Tether runs well",
            previous.display()
        );
    }
    Ok(())
}

fn serve(settings: Settings) -> Result<(), String> {
    let ctx = startup::prepare_for(settings, Use::Serve)?;
    // While it runs, `tether restore` refuses to replace the SQLite file.
    let _presence = crate::backup::Presence::hold(&ctx.settings)?;
    let first = startup::bootstrap(&ctx)?;
    startup::store_spilled(&ctx)?;
    actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind(ctx.settings.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.settings.bind))?;
        // Last, so that a refused start leaves no key check behind.
        startup::record_key_checks(&ctx)?;
        let app = Application::build_on(ctx.clone(), listener)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.settings.bind))?;
        let s = &ctx.settings;
        let env = if s.is_production() {
            "production"
        } else {
            "development"
        };
        println!(
            "Tether is listening on http://{}:{} ({}, {env})",
            s.bind.ip(),
            app.port(),
            ctx.backend
        );
        match first {
            Some(admin) => {
                println!(
                    "First start: created tenant '{}' and its admin. Log in at {}/login",
                    admin.tenant,
                    s.base_url()
                );
                println!("  email:    {}", admin.email);
                println!("  password: {}", admin.password.expose());
                println!("  (the password is shown only this once)");
            }
            None => println!(
                "Log in at {}/login (add an admin with `tether user add`)",
                s.base_url()
            ),
        }
        app.run_until_signalled().await.map_err(|e| e.to_string())
    })
}

/// What a database that lacks migrations needs, naming them.
fn pending_migrations(ctx: &Context) -> String {
    format!(
        "the {} database lacks {} migration(s) of this version of Tether ({}): run `tether migrate` (nothing was changed)",
        ctx.backend,
        ctx.pending_migrations.len(),
        ctx.pending_migrations.join(", ")
    )
}

fn conn(ctx: &Context) -> Result<crate::db::PooledConn, String> {
    ctx.pool
        .get()
        .map_err(|e| format!("database unreachable: {e}"))
}

fn tenant(c: TenantCommand, ctx: &Context) -> Result<ExitCode, Stop> {
    let mut db = conn(ctx)?;
    match c {
        TenantCommand::Add { external_id, name } => {
            let name = name.unwrap_or_else(|| external_id.clone());
            let t = Tenant::create(&mut db, &external_id, &name).map_err(|e| e.to_string())?;
            println!("created tenant '{}' ({})", t.external_id, t.name);
        }
        TenantCommand::List { json } => {
            let tenants = Tenant::list(&mut db).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    tenants
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "external_id": t.external_id,
                                "name": t.name,
                                "created_at": rfc3339(t.created_at),
                            })
                        })
                        .collect(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 3]> = tenants
                .iter()
                .map(|t| {
                    [
                        t.external_id.to_string(),
                        t.name.clone(),
                        minute(t.created_at),
                    ]
                })
                .collect();
            print_table(["EXTERNAL ID", "NAME", "CREATED"], &rows);
            println!("{} tenant(s)", tenants.len());
        }
        TenantCommand::Remove {
            external_id,
            dry_run,
            yes,
        } => {
            drop(db);
            return tenant_remove(ctx, &external_id, dry_run, yes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tenant_remove(
    ctx: &Context,
    external_id: &str,
    dry_run: bool,
    yes: bool,
) -> Result<ExitCode, Stop> {
    use crate::offboarding::{remove, Outcome};
    let app = ctx.app();
    let actor = crate::db::models::event::Actor::Cli;
    let runtime = actix_web::rt::System::new();
    if !dry_run {
        // What would go, for the question; an unknown tenant stops here.
        let plan = runtime
            .block_on(remove(&app, external_id, true, &actor))
            .map_err(|e| e.to_string())?;
        let e = &plan.erased;
        confirm(
            &format!(
                "Remove tenant '{}' and its {} connection(s), {} user(s), {} API key(s)? Type the tenant id to confirm:",
                plan.tenant, e.connections, e.users, e.api_keys
            ),
            plan.tenant.as_str(),
            yes,
            "tenant remove",
        )?;
    }
    let done = runtime
        .block_on(remove(&app, external_id, dry_run, &actor))
        .map_err(|e| e.to_string())?;
    if done.dry_run {
        println!(
            "dry run: nothing was changed; removing tenant '{}' would do this:",
            done.tenant
        );
    } else {
        println!("removed tenant '{}':", done.tenant);
    }
    for r in &done.revocations {
        let outcome = match r.outcome {
            Outcome::Revoked => "revoked at the provider".to_string(),
            Outcome::WouldRevoke => "would be revoked at the provider".to_string(),
            Outcome::NotOffered => {
                "the provider offers no revocation: remove the app there".to_string()
            }
            Outcome::ProviderNotConfigured => {
                "the provider is not configured here: remove the app there".to_string()
            }
            Outcome::Failed | Outcome::Unopenable => format!(
                "revocation FAILED ({}): remove the app at the provider",
                r.detail.as_deref().unwrap_or("no detail")
            ),
        };
        println!("  {} {}: {outcome}", r.provider, r.account);
    }
    let failed = done
        .revocations
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::Unopenable))
        .count();
    let e = &done.erased;
    println!(
        "{} {} connection(s) ({} holding tokens), {} admin(s), {} connect link(s), {} OAuth state(s), {} event(s), {} API key(s), and the tenant",
        if done.dry_run { "would erase" } else { "erased" },
        e.connections,
        e.tokens,
        e.users,
        e.connect_links,
        e.oauth_states,
        e.events,
        e.api_keys
    );
    if failed > 0 {
        eprintln!(
            "tether: {failed} revocation(s) failed: remove the app at those providers (exit code {PARTLY})"
        );
        return Ok(ExitCode::from(PARTLY));
    }
    Ok(ExitCode::SUCCESS)
}

fn connections_list(
    filter: Vec<(String, String)>,
    json: bool,
    ctx: &Context,
) -> Result<(), String> {
    use crate::connections::directory;
    let filter = directory::Filter::from_query(filter).map_err(|e| e.to_string())?;
    let mut db = conn(ctx)?;
    let listing = directory::find(
        &mut db,
        &ctx.providers,
        &directory::Scope::AllTenants,
        &filter,
    )
    .map_err(|e| e.to_string())?;
    let more = format!(
        "(more matched: narrow with --tenant, --provider or --status, or raise --limit up to {})",
        directory::MAX_LIMIT
    );
    if json {
        print_json(
            listing
                .connections
                .iter()
                .map(|found| {
                    let c = &found.connection;
                    serde_json::json!({
                        "tenant": found.tenant,
                        "provider": c.provider,
                        "account_id": c.account_id,
                        "account_name": c.account_name,
                        "status": crate::connections::status::public_status(Some(c)),
                        "expires_at": c.expires_at.map(rfc3339),
                        "last_error": c.last_error,
                    })
                })
                .collect(),
        );
        if listing.truncated {
            eprintln!("{more}");
        }
        return Ok(());
    }
    let rows: Vec<[String; 6]> = listing
        .connections
        .iter()
        .map(|found| {
            let c = &found.connection;
            let account = match &c.account_name {
                Some(name) if *name != c.account_id => format!("{} ({name})", c.account_id),
                _ => c.account_id.clone(),
            };
            let expires = c.expires_at.map_or("never".into(), minute);
            let error: String = c
                .last_error
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(80)
                .collect();
            [
                found.tenant.to_string(),
                c.provider.to_string(),
                account,
                crate::connections::status::public_status(Some(c)).to_string(),
                expires,
                error,
            ]
        })
        .collect();
    print_table(
        [
            "TENANT",
            "PROVIDER",
            "ACCOUNT",
            "STATUS",
            "EXPIRES",
            "LAST ERROR",
        ],
        &rows,
    );
    println!("{} connection(s)", listing.connections.len());
    if listing.truncated {
        println!("{more}");
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ").map_err(|_| {
            "no terminal to prompt on: pass --password-stdin and pipe the password in".to_string()
        })?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    };
    if password.chars().count() < crate::auth::MIN_PASSWORD_LEN {
        return Err(format!(
            "a password needs at least {} characters",
            crate::auth::MIN_PASSWORD_LEN
        ));
    }
    Ok(password)
}

fn user(c: UserCommand, ctx: &Context) -> Result<ExitCode, Stop> {
    let mut db = conn(ctx)?;
    match c {
        UserCommand::Add {
            tenant,
            email,
            password_stdin,
        } => {
            let t = Tenant::require(&mut db, &tenant).map_err(|e| e.to_string())?;
            // Check the email before asking for a password.
            let email =
                crate::db::models::user::normalize_email(&email).map_err(|e| e.to_string())?;
            let password = read_password(password_stdin)?;
            let hash = crate::auth::hash_password(&password).map_err(|e| e.to_string())?;
            let u = User::create(&mut db, &t.id, &email, Some(&hash)).map_err(|e| e.to_string())?;
            println!("created admin {} for tenant '{}'", u.email, t.external_id);
        }
        UserCommand::List { tenant, json } => {
            if let Some(ext) = &tenant {
                Tenant::require(&mut db, ext).map_err(|e| e.to_string())?;
            }
            let users = User::list(&mut db, tenant.as_deref()).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    users
                        .iter()
                        .map(|(u, ext)| {
                            serde_json::json!({
                                "email": u.email,
                                "tenant": ext,
                                "role": u.role,
                                "last_login_at": u.last_login_at.map(rfc3339),
                            })
                        })
                        .collect(),
                );
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<[String; 4]> = users
                .iter()
                .map(|(u, ext)| {
                    [
                        u.email.clone(),
                        ext.to_string(),
                        u.role.to_string(),
                        u.last_login_at.map_or("never".into(), minute),
                    ]
                })
                .collect();
            print_table(["EMAIL", "TENANT", "ROLE", "LAST LOGIN"], &rows);
            println!("{} user(s)", users.len());
        }
        UserCommand::SignOut { email } => {
            let u = User::by_email(&mut db, &email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no admin with email {}", email.trim()))?;
            User::end_sessions(&mut db, &u.id).map_err(|e| e.to_string())?;
            println!("signed {} out everywhere", u.email);
        }
        UserCommand::Remove { email, yes } => {
            let u = User::by_email(&mut db, &email)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no admin with email {}", email.trim()))?;
            confirm(
                &format!("Remove admin {}? Type their email to confirm:", u.email),
                &u.email,
                yes,
                "user remove",
            )?;
            if !User::remove(&mut db, &email).map_err(|e| e.to_string())? {
                return Err(Stop::Error(format!("no admin with email {}", email.trim())));
            }
            println!(
                "removed admin {}; their sessions have ended",
                email.trim().to_lowercase()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn api_key(c: ApiKeyCommand, ctx: &Context) -> Result<(), String> {
    let mut db = conn(ctx)?;
    match c {
        ApiKeyCommand::Create {
            name,
            tenant,
            admin,
        } => {
            let tenant_row = match &tenant {
                Some(ext) => Some(Tenant::require(&mut db, ext).map_err(|e| e.to_string())?),
                None => None,
            };
            let (key, secret) = ApiKey::create(
                &mut db,
                &name,
                tenant_row.as_ref().map(|t| t.id.as_str()),
                admin,
            )
            .map_err(|e| e.to_string())?;
            let scope = tenant.map_or("all tenants".to_string(), |t| format!("tenant '{t}'"));
            let admin = if key.is_admin { ", admin" } else { "" };
            println!(
                "created API key '{}' (prefix {}, {scope}{admin}); it is shown only once:",
                key.name, key.prefix
            );
            println!("{}", secret.expose());
        }
        ApiKeyCommand::List { json } => {
            let keys = ApiKey::list(&mut db).map_err(|e| e.to_string())?;
            let state = |k: &ApiKey| {
                if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                }
            };
            if json {
                print_json(
                    keys.iter()
                        .map(|(k, ext)| {
                            serde_json::json!({
                                "prefix": k.prefix,
                                "name": k.name,
                                "tenant": ext,
                                "admin": k.is_admin,
                                "last_used_at": k.last_used_at.map(rfc3339),
                                "state": state(k),
                            })
                        })
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 6]> = keys
                .iter()
                .map(|(k, ext)| {
                    [
                        k.prefix.clone(),
                        k.name.clone(),
                        ext.clone().unwrap_or_else(|| "(all)".into()),
                        if k.is_admin { "yes" } else { "no" }.into(),
                        k.last_used_at.map_or("never".into(), minute),
                        state(k).into(),
                    ]
                })
                .collect();
            print_table(
                ["PREFIX", "NAME", "TENANT", "ADMIN", "LAST USED", "STATE"],
                &rows,
            );
            println!("{} key(s)", keys.len());
        }
        ApiKeyCommand::Revoke { prefix } => {
            let k = ApiKey::revoke(&mut db, &prefix).map_err(|e| e.to_string())?;
            println!("revoked API key '{}' (prefix {})", k.name, k.prefix);
        }
    }
    Ok(())
}

fn keys(c: KeysCommand, settings: Settings) -> Result<ExitCode, String> {
    match c {
        KeysCommand::Status { json } => {
            // Opened without the start-up check, so that a broken ring can be inspected.
            let ctx = startup::open(settings)?;
            if !ctx.pending_migrations.is_empty() {
                return Err(pending_migrations(&ctx));
            }
            let mut db = conn(&ctx)?;
            let usage = crate::keys::usage(&mut db, &ctx.keys).map_err(|e| e.to_string())?;
            // With --json the array alone is on stdout; what follows it goes to stderr.
            let say = |line: String| {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            if json {
                print_json(
                    usage
                        .iter()
                        .map(|u| {
                            serde_json::json!({
                                "key_id": u.key_id,
                                "in_ring": u.in_ring,
                                "primary": u.primary,
                                "connections": u.connections,
                                "oauth_states": u.oauth_states,
                                "pending_installs": u.pending_installs,
                            })
                        })
                        .collect(),
                );
            } else {
                let rows: Vec<[String; 4]> = usage
                    .iter()
                    .map(|u| {
                        let state = match (u.in_ring, u.primary) {
                            (true, true) => "primary",
                            (true, false) => "in ring (read only)",
                            (false, _) => "MISSING from ring",
                        };
                        [
                            u.key_id.to_string(),
                            state.into(),
                            u.connections.to_string(),
                            u.oauth_states.to_string(),
                        ]
                    })
                    .collect();
                print_table(["KEY ID", "STATE", "CONNECTIONS", "OAUTH STATES"], &rows);
            }
            match crate::keys::verify(&mut db, &ctx.keys) {
                Ok(()) => {
                    let stale: i64 = usage
                        .iter()
                        .filter(|u| !u.primary)
                        .map(|u| u.connections + u.oauth_states + u.pending_installs)
                        .sum();
                    if stale > 0 {
                        say(format!(
                            "{stale} row(s) are not under the primary key: run `tether keys rotate`"
                        ));
                    } else {
                        say(format!(
                            "every encrypted row is under the primary key '{}'",
                            ctx.keys.primary_id()
                        ));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    say(format!("problem: {e}"));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        KeysCommand::Rotate { batch_size } => {
            let ctx = startup::prepare_for(settings, Use::Write)?;
            let mut db = conn(&ctx)?;
            let blockers = crate::keys::rotation_blockers(&mut db, &ctx.keys)
                .map_err(|e| format!("database error: {e}"))?;
            if !blockers.is_empty() {
                return Err(format!(
                    "not rotating: {}; rows moved to '{}' would fail there. Give every instance the new key first (README: Rotating keys); nothing was changed",
                    blockers.join("; "),
                    ctx.keys.primary_id()
                ));
            }
            println!(
                "re-encrypting under primary key '{}' in batches of {batch_size}",
                ctx.keys.primary_id()
            );
            let report =
                crate::keys::rotate(&mut db, &ctx.keys, batch_size, |line| println!("{line}"))
                    .map_err(|e| format!("database error: {e}"))?;
            println!(
                "done: {} row(s) re-encrypted, {} changed meanwhile by a running server, {} could not be opened",
                report.rotated,
                report.changed_meanwhile,
                report.failed.len()
            );
            for row in &report.failed {
                println!("  could not open: {row}");
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// What became of one line of an import file.
enum LineOutcome {
    Imported,
    Skipped,
    Refused,
}

/// `connections import`: one line of output per line of input (blank lines
/// aside), a summary, and exit code 3 when any line was refused. A
/// refused or skipped line writes nothing; a dry run writes nothing at all.
/// Due tokens are made due for the scheduler of the running server, which
/// refreshes them at its next tick.
fn connections_import(
    file: &std::path::Path,
    dry_run: bool,
    ctx: &Context,
) -> Result<ExitCode, String> {
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut db = conn(ctx)?;
    let actor = crate::db::models::event::Actor::Import { by: "cli".into() };
    // In a dry run nothing is written, so a second line for one account
    // would not see the first: remember which line would have taken it.
    let mut planned = std::collections::HashMap::new();
    let (mut imported, mut skipped, mut refused) = (0, 0, 0);
    for (n, line) in input.split(b'\n').enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| format!("cannot read line {n}: {e}"))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (outcome, said) = import_line(&mut db, ctx, &line, &actor, dry_run, &mut planned, n)?;
        match outcome {
            LineOutcome::Imported => imported += 1,
            LineOutcome::Skipped => skipped += 1,
            LineOutcome::Refused => refused += 1,
        }
        println!("line {n}: {said}");
    }
    if dry_run {
        println!("dry run, nothing written: {imported} would be imported, {skipped} skipped, {refused} refused");
    } else {
        println!("{imported} imported, {skipped} skipped, {refused} refused");
    }
    Ok(if refused > 0 {
        ExitCode::from(PARTLY)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line of an import file: what became of it and the sentence that says
/// so. Only a failure of the database itself stops the import.
fn import_line(
    db: &mut crate::db::PooledConn,
    ctx: &Context,
    line: &[u8],
    actor: &crate::db::models::event::Actor,
    dry_run: bool,
    planned: &mut std::collections::HashMap<(String, String, String), usize>,
    n: usize,
) -> Result<(LineOutcome, String), String> {
    use crate::connections::import::{apply, Outcome, Request};
    let refuse = |why: &str| Ok((LineOutcome::Refused, format!("refused: {why}")));
    let mut value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        // serde_json's syntax errors name a position, never the text.
        Err(e) => return refuse(&format!("not a JSON object ({e})")),
    };
    let Some(obj) = value.as_object_mut() else {
        return refuse("a line must be a JSON object");
    };
    let tenant = match obj.remove("tenant") {
        Some(serde_json::Value::String(t)) if crate::ids::ExternalTenantId::parse(&t).is_ok() => t,
        _ => return refuse("\"tenant\" must be the tenant's external id (1 to 128 letters, digits, '-', '_', '.' or ':')"),
    };
    let provider_key = match obj.remove("provider") {
        Some(serde_json::Value::String(p)) if crate::providers::valid_key(&p) => p,
        _ => return refuse("\"provider\" must be a provider's key, such as gohighlevel"),
    };
    let request = match Request::parse(&value) {
        Ok(r) => r,
        Err(e) => return refuse(e.message()),
    };
    let Some(tenant_row) = Tenant::by_external_id(db, &tenant).map_err(|e| e.to_string())? else {
        return Ok((
            LineOutcome::Skipped,
            format!("skipped (unknown tenant '{tenant}')"),
        ));
    };
    let Some(provider) = ctx.providers.shared(&provider_key) else {
        let why = if ctx.providers.get(&provider_key).is_some() {
            "is not enabled"
        } else {
            "does not exist"
        };
        return Ok((
            LineOutcome::Skipped,
            format!("skipped (unknown provider '{provider_key}': it {why})"),
        ));
    };
    let outcome = apply(
        db,
        &ctx.keys,
        &ctx.settings,
        provider,
        &tenant_row.id,
        &request,
        actor,
        dry_run,
    );
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if e.status().is_server_error() => {
            log::error!("import line {n}: {e:?}");
            return Err(format!("line {n}: {}; stopped here", e.message()));
        }
        Err(e) => return refuse(e.message()),
    };
    let what = |account: &str| format!("{tenant}/{provider_key}/{account}");
    Ok(match outcome {
        Outcome::AlreadyConnected { account_id } => (
            LineOutcome::Skipped,
            format!("skipped {} (already connected)", what(&account_id)),
        ),
        Outcome::Imported {
            account_id,
            replaced,
            due,
            ..
        } => {
            let key = (tenant.clone(), provider_key.clone(), account_id.clone());
            if let Some(earlier) = planned.get(&key).filter(|_| !request.replace) {
                return Ok((
                    LineOutcome::Skipped,
                    format!(
                        "skipped {} (already connected by line {earlier})",
                        what(&account_id)
                    ),
                ));
            }
            let replaced = replaced || planned.contains_key(&key);
            if dry_run {
                planned.insert(key, n);
            }
            let mut notes = Vec::new();
            if replaced {
                notes.push("replacing the stored tokens");
            }
            if due {
                notes.push("due: refreshed at the scheduler's next tick");
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            let verb = if dry_run { "would import" } else { "imported" };
            (
                LineOutcome::Imported,
                format!("{verb} {}{notes}", what(&account_id)),
            )
        }
    })
}

fn providers_list(settings: Settings, json: bool) -> Result<(), String> {
    let catalogue = crate::providers::Catalogue::load(&settings).map_err(|e| e.to_string())?;
    let redirect = |p: &crate::providers::Provider| match p.flow {
        crate::providers::Flow::AuthorizationCode => Some(settings.redirect_uri(&p.key)),
        crate::providers::Flow::ClientCredentials => None,
    };
    if json {
        print_json(
            catalogue
                .all()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "name": p.display_name,
                        "enabled": p.disabled_reason().is_none(),
                        "disabled_reason": p.disabled_reason(),
                        "redirect_uri": redirect(p),
                    })
                })
                .collect(),
        );
        return Ok(());
    }
    let rows: Vec<[String; 4]> = catalogue
        .all()
        .map(|p| {
            let state = match p.disabled_reason() {
                None => "enabled".to_string(),
                Some(why) => format!("disabled: {why}"),
            };
            [
                p.key.to_string(),
                p.display_name.to_string(),
                state,
                redirect(p).unwrap_or_else(|| "(none: no browser redirect)".into()),
            ]
        })
        .collect();
    print_table(["KEY", "NAME", "STATE", "REDIRECT URI"], &rows);
    Ok(())
}

fn webhooks(c: WebhooksCommand, ctx: &Context) -> Result<(), String> {
    use crate::db::models::webhook as outbox;
    let mut db = conn(ctx)?;
    match c {
        WebhooksCommand::List {
            given_up,
            limit,
            json,
        } => {
            let found = outbox::undelivered(&mut db, given_up, limit).map_err(|e| e.to_string())?;
            if json {
                print_json(
                    found
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "id": d.id,
                                "type": d.kind,
                                "attempts": d.attempts,
                                "last_error": d.last_error,
                                "next_attempt_at": d.next_attempt_at.map(rfc3339),
                                "given_up": d.given_up,
                                "created_at": rfc3339(d.created_at),
                            })
                        })
                        .collect(),
                );
                return Ok(());
            }
            let rows: Vec<[String; 6]> = found
                .iter()
                .map(|d| {
                    let next = match d.next_attempt_at {
                        Some(t) => minute(t),
                        None => "given up".into(),
                    };
                    [
                        d.id.clone(),
                        d.kind.clone(),
                        d.attempts.to_string(),
                        next,
                        minute(d.created_at),
                        d.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                [
                    "ID",
                    "TYPE",
                    "ATTEMPTS",
                    "NEXT ATTEMPT",
                    "CREATED",
                    "LAST ERROR",
                ],
                &rows,
            );
            println!("{} delivery(ies) not yet made", found.len());
            if ctx.settings.webhook.is_none() {
                println!("(webhooks are off here: TETHER_WEBHOOK_URL is unset)");
            }
        }
        WebhooksCommand::Retry { ids, all_given_up } => {
            let retried = if all_given_up {
                outbox::retry_given_up(&mut db).map_err(|e| e.to_string())?
            } else {
                outbox::retry(&mut db, &ids)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
            };
            for id in &retried {
                println!("webhook {id}: due now");
            }
            println!(
                "{} delivery(ies) due now: the running server sends them at its next round",
                retried.len()
            );
        }
    }
    Ok(())
}

/// Prints one line per check; exits non-zero when anything will fail.
fn doctor(settings: Settings) -> ExitCode {
    let mut failed = false;
    let mut report = |level: &str, msg: String| {
        if level == "FAIL" {
            failed = true;
        }
        println!("{level:<4}  {msg}");
    };
    let env = if settings.is_production() {
        "production"
    } else {
        "development"
    };
    report("ok", format!("configuration is valid ({env})"));

    let public = settings.public_url.clone();
    let local = matches!(public.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if public.scheme() == "http" && !local {
        report("warn", format!("TETHER_PUBLIC_URL {} is http:// on a non-local host: providers refuse such redirect URIs", settings.base_url()));
    }
    if settings
        .var("TETHER_PUBLIC_URL")
        .is_some_and(|v| v.trim().ends_with('/'))
    {
        report("warn", "TETHER_PUBLIC_URL ends with '/': it is ignored; register the redirect URIs below exactly".into());
    }
    if !settings.is_production() {
        report("warn", "development mode: keys are generated into the data dir; use TETHER_ENV=production for real tenants".into());
    }

    let catalogue = crate::providers::Catalogue::load(&settings);
    // Opened without migrating: a new version's doctor, run before a
    // deploy, must not change the schema under running instances.
    match startup::open(settings.clone()) {
        Ok(ctx) if !ctx.pending_migrations.is_empty() => {
            report("FAIL", pending_migrations(&ctx));
            report(
                "--",
                "key ring: not checked until the database is migrated".into(),
            );
        }
        Ok(ctx) => {
            report(
                "ok",
                format!("database ({}) is reachable and migrated", ctx.backend),
            );
            match conn(&ctx).and_then(|mut db| crate::keys::verify(&mut db, &ctx.keys)) {
                Ok(()) => report(
                    "ok",
                    format!(
                        "key ring opens the stored data (primary key '{}')",
                        ctx.keys.primary_id()
                    ),
                ),
                Err(e) => report("FAIL", format!("key ring: {e}")),
            }
            let flags = conn(&ctx).and_then(|mut db| {
                crate::db::models::provider_flag::ProviderFlag::all(&mut db)
                    .map_err(|e| e.to_string())
            });
            for flag in flags.unwrap_or_default() {
                report(
                    "FAIL",
                    format!(
                        "{}: rejected Tether's client credentials at {} ({}); check its client id and secret",
                        flag.provider,
                        flag.flagged_at.format("%Y-%m-%d %H:%M UTC"),
                        flag.error
                    ),
                );
            }
        }
        // The catalogue's own problem, reported once below.
        Err(e) if catalogue.as_ref().is_err_and(|c| c.to_string() == e) => report(
            "--",
            "database: not checked until the providers are fixed".into(),
        ),
        Err(e) => report("FAIL", e),
    }

    match catalogue {
        Ok(catalogue) => {
            for p in catalogue.all() {
                let redirect = settings.redirect_uri(&p.key);
                if p.enabled() {
                    report(
                        "ok",
                        format!("{}: enabled; redirect URI to register: {redirect}", p.key),
                    );
                    if p.key.as_str() == "gohighlevel" && settings.gohighlevel.app_id.is_none() {
                        report("warn", format!("gohighlevel: TETHER_GOHIGHLEVEL_APP_ID is unset, so app webhooks of any Marketplace app signed by GoHighLevel are taken at {}/webhooks/gohighlevel", settings.base_url()));
                    }
                } else {
                    report(
                        "--",
                        format!(
                            "{}: disabled ({}); redirect URI would be {redirect}",
                            p.key,
                            p.disabled_reason().unwrap_or_default()
                        ),
                    );
                }
            }
        }
        // Half-configured providers land here, in the words `serve` stops with.
        Err(e) => report("FAIL", e.to_string()),
    }
    if failed {
        println!("doctor found problems that will stop Tether from working");
        ExitCode::FAILURE
    } else {
        println!("doctor found nothing that will fail");
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand and argument, at any depth, with no help line.
    fn without_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            let path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(path.clone());
            }
            without_help(sub, &path, missing);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_a_line_of_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        without_help(&cmd, "tether", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:?}");
    }
}
