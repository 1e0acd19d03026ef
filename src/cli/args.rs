//! The commands and their arguments, as clap reads them: `tether --help`
//! and every subcommand's help come from the doc comments here.

use crate::ids::ExternalTenantId;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
        tenant: Option<ExternalTenantId>,
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

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an admin for a tenant (prompts for the password unless --password-stdin).
    Add {
        /// The tenant the admin signs in to.
        #[arg(long, value_name = "EXTERNAL_ID")]
        tenant: ExternalTenantId,
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
        tenant: Option<ExternalTenantId>,
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
        tenant: Option<ExternalTenantId>,
        /// What the key may do, repeated or separated by commas: token:read,
        /// status:read, directory:read, proxy, links, connections:write,
        /// admin, or all (default: every scope but admin).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Limit the key to a provider's connections; repeat for several
        /// (default: every provider).
        #[arg(long = "provider", value_name = "KEY")]
        providers: Vec<String>,
        /// Add the admin scope (provisioning tenants, importing tokens,
        /// assigning installs); the same as --scope admin.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their secrets), newest first.
    List {
        /// One JSON array on stdout: prefix, name, tenant, scopes, providers, last_used_at, state.
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
    /// Providers' app events held because no tenant holds their account
    /// yet, oldest first: relayed when a tenant connects the account,
    /// dropped after TETHER_RELAY_HOLD_DAYS.
    Held {
        /// The first this many rows, oldest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// One JSON array on stdout: id, provider, account_id, event_type,
        /// received_at, held_until.
        #[arg(long)]
        json: bool,
    },
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
