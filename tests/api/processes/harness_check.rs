//! Harness checks: the same machinery where today's code behaves (no kills,
//! or long-lived tokens, or a margin shorter than the tokens). Ignored; when
//! one of the real tests fails, these tell a harness problem from a Tether
//! one.

use super::refresh_budget::{refresh_budget, BudgetPlan};
use super::sigkill_storm::{sigkill_storm, KillPlan};
use super::sigterm_storm::{sigterm_storm, TermPlan};
use crate::backend_tests;
use crate::helpers::{skipped_without_postgres, Backend};

backend_tests!(
    #[ignore = "checks the harness, not Tether"]
    sigterm_storm_without_sigterms,
);

/// The storm without SIGTERMs: provider, load and settling agree.
async fn sigterm_storm_without_sigterms(backend: Backend) {
    sigterm_storm(
        backend,
        TermPlan {
            life: 3,
            sigterms: 0,
            require_in_flight: false,
        },
    )
    .await
}

/// SIGTERMs and restarts with hour-long tokens: nothing to refresh, so
/// nothing to lose; the signals, exits and restarts work.
#[actix_web::test]
#[ignore = "checks the harness, not Tether"]
async fn sigterms_with_long_lived_tokens_postgres() {
    if !skipped_without_postgres() {
        sigterm_storm(
            Backend::Postgres,
            TermPlan {
                life: 3600,
                sigterms: 3,
                require_in_flight: false,
            },
        )
        .await
    }
}

/// SIGKILLs with hour-long tokens: nothing lost, B answers 200 throughout.
#[actix_web::test]
#[ignore = "checks the harness, not Tether"]
async fn sigkills_with_long_lived_tokens_postgres() {
    if !skipped_without_postgres() {
        sigkill_storm(
            Backend::Postgres,
            KillPlan {
                life: 3600,
                sigkills: 3,
            },
        )
        .await
    }
}

/// The storm without SIGKILLs.
#[actix_web::test]
#[ignore = "checks the harness, not Tether"]
async fn sigkill_storm_without_sigkills_postgres() {
    if !skipped_without_postgres() {
        sigkill_storm(
            Backend::Postgres,
            KillPlan {
                life: 3,
                sigkills: 0,
            },
        )
        .await
    }
}

/// The budget with a margin and min_ttl shorter than the tokens.
#[actix_web::test]
#[ignore = "checks the harness, not Tether"]
async fn refresh_budget_with_short_margin_postgres() {
    if !skipped_without_postgres() {
        refresh_budget(
            Backend::Postgres,
            BudgetPlan {
                margin: Some(1),
                min_ttl: Some(1),
            },
        )
        .await
    }
}
