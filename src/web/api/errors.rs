//! The error answers many routes share, each declared once for the document
//! (`utoipa::IntoResponses`): a route's `#[utoipa::path]` names the ones it
//! can give beside its own.

use crate::error::ErrorBody;
use std::collections::BTreeMap;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{Ref, RefOr};

/// One JSON error answer, as the document writes it.
fn error(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let schema = Ref::from_schema_name(<ErrorBody as utoipa::ToSchema>::name());
    let content = ContentBuilder::new().schema(Some(schema)).build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

/// 401: every route behind an API key.
pub(super) enum NoValidKey {}

impl utoipa::IntoResponses for NoValidKey {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error(401, "No valid API key")
    }
}

/// 403: a key limited to another tenant than the path's ([`super::rights::ForTenant`]).
pub(super) enum OtherTenant {}

impl utoipa::IntoResponses for OtherTenant {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error(403, "The key may not act for this tenant")
    }
}

/// 503: the database is away and the answer needs it.
pub(super) enum DatabaseUnreachable {}

impl utoipa::IntoResponses for DatabaseUnreachable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error(503, "The database is unreachable")
    }
}

/// 403: a key limited to one tenant where one for all tenants is needed
/// ([`super::rights::AllTenantsKey`]).
pub(super) enum LimitedToOneTenant {}

impl utoipa::IntoResponses for LimitedToOneTenant {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error(403, "A key limited to one tenant")
    }
}

/// 403: a key without the admin scope, or an admin key limited to another
/// tenant ([`super::rights::AdminKey`] with the tenant's scope).
pub(super) enum NotAdminForTenant {}

impl utoipa::IntoResponses for NotAdminForTenant {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error(
            403,
            "A key without the admin scope, or one limited to another tenant",
        )
    }
}
