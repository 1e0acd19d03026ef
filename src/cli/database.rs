//! The database a command works on: a connection from the pool, and the
//! refusal when the schema lacks migrations.

use crate::startup::Context;

/// What a database that lacks migrations needs, naming them.
pub(super) fn pending_migrations(ctx: &Context) -> String {
    format!(
        "the {} database lacks {} migration(s) of this version of Tether ({}): run `tether migrate` (nothing was changed)",
        ctx.backend,
        ctx.pending_migrations.len(),
        ctx.pending_migrations.join(", ")
    )
}

pub(super) fn conn(ctx: &Context) -> Result<crate::db::PooledConn, String> {
    ctx.pool
        .get()
        .map_err(|e| format!("database unreachable: {e}"))
}
