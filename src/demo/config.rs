//! What every part of the demo server shares: its one client, the scopes it
//! knows, and [`DemoConfig`], the little of the deployment it needs.

use crate::config::Settings;
use crate::crypto::Secret;
use crate::providers::Catalogue;
use actix_web::web;

/// Scopes the demo knows, with the line the consent page shows for each.
pub(super) const SCOPES: &[(&str, &str)] = &[
    ("profile", "See your name and email address"),
    ("contacts.read", "Read your contacts"),
];

/// The demo client: its id and its secret.
pub(super) type Client = (String, Secret<String>);

/// What the demo server needs to know of the deployment, and nothing more:
/// registered as app data beside the store.
pub struct DemoConfig {
    /// Tether's client at the demo, `None` while the demo provider is off.
    pub(super) client: Option<Client>,
    /// The one redirect URI the demo accepts.
    pub(super) redirect_uri: String,
    /// Its issuer identifier (RFC 9207 `iss`).
    pub(super) issuer: String,
    /// Tether's public origin, which the consent form must come from.
    pub(super) origin: String,
}

impl DemoConfig {
    pub fn new(settings: &Settings, providers: &Catalogue) -> web::Data<DemoConfig> {
        let client = settings
            .demo_provider
            .then(|| providers.get("demo").and_then(|p| p.credentials.clone()))
            .flatten();
        web::Data::new(DemoConfig {
            client,
            redirect_uri: settings.redirect_uri("demo"),
            issuer: format!("{}/demo", settings.base_url()),
            origin: settings.public_url.origin().ascii_serialization(),
        })
    }
}
