//! Built-in presets, from what each platform documents in its developer
//! documentation; docs/design.md section 11 lists what each does and why.
//! Anything a platform does not confirm is configurable through the providers file.
//!
//! PKCE (S256) is on in [`base`], so on for every platform whose documents
//! confirm it (HubSpot, Calendly, Google, Spotify, Microsoft: PROVIDERS.md).
//! Each preset that turns it off says why; a test keeps the list in step.

use super::provider::{
    Budget, ClientAuth, FieldType, Flow, Identity, LoginHint, Provider, RefreshStyle, SettingField,
};
use crate::config::Settings;
use crate::ids::ProviderKey;
use std::collections::BTreeMap;

/// A preset with the common defaults; each platform changes what differs.
pub(super) fn base(
    key: &str,
    display_name: &str,
    authorize_url: &str,
    token_url: &str,
) -> Provider {
    let upper = key.to_ascii_uppercase().replace('-', "_");
    Provider {
        key: ProviderKey::known(key),
        display_name: display_name.into(),
        flow: Flow::AuthorizationCode,
        authorize_url: authorize_url.into(),
        token_url: token_url.into(),
        revocation_url: None,
        userinfo_url: None,
        identity: Identity::Bearer,
        account_id: Vec::new(),
        account_name: None,
        account_label: None,
        parent_account: None,
        issuer: None,
        // No platform of the catalogue documents RFC 9207 (PROVIDERS.md); a
        // providers file turns it on (`iss_required = true`) for one that does.
        iss_required: false,
        scopes: Vec::new(),
        scope_separator: " ".into(),
        provider_initiated_installs: false,
        pkce: true,
        client_auth: ClientAuth::Post,
        revocation_client_auth: None,
        client_id_env: format!("{upper}_CLIENT_ID"),
        client_secret_env: format!("{upper}_CLIENT_SECRET"),
        keep_fields: Vec::new(),
        api_base_url: None,
        api_headers: BTreeMap::new(),
        api_budgets: Vec::new(),
        authorize_params: BTreeMap::new(),
        consent_params: consent_params(key),
        token_params: BTreeMap::new(),
        refresh: RefreshStyle::Standard,
        refresh_token_lifetime_days: None,
        // Unknown means "may rotate": a new refresh token in a refresh's
        // answer restarts its tracked lifetime.
        rotates_refresh_tokens: true,
        location_tokens: false,
        one_holder: false,
        private_tokens: None,
        installed_by: None,
        platform: None,
        optional_scopes: Vec::new(),
        // OpenID Connect's `offline_access` asks for a refresh token and is
        // never echoed in a token answer's `scope` (oidc-provider, Okta and
        // Auth0 leave it out), so it is never missing from a grant.
        request_only_scopes: strings(&["offline_access"]),
        scope_descriptions: descriptions(&[
            ("openid", "Confirm who you are"),
            ("email", "See your email address"),
            ("profile", "See your name and profile picture"),
            (
                "offline_access",
                "Keep working for you when you are not signed in",
            ),
        ]),
        login_hint: None,
        app_id: None,
        webhook_key: None,
        settings_schema: Vec::new(),
        credentials: None,
    }
}

/// Scope descriptions from (scope, sentence) pairs.
fn descriptions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `base`'s scope descriptions with a platform's own added.
fn described(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all = base("x", "x", "", "").scope_descriptions;
    all.extend(descriptions(pairs));
    all
}

/// What each provider is sent to show its consent or account chooser on a
/// connect link's flow. OpenID Connect's `prompt=consent` unless the
/// platform documents another; RFC 6749 section 3.1 has servers ignore
/// parameters they do not know, so it is safe where nothing is documented.
fn consent_params(key: &str) -> BTreeMap<String, String> {
    match key {
        // Google: the chooser and the consent screen (which also re-issues a
        // refresh token).
        "google" => params(&[("prompt", "consent select_account")]),
        // Microsoft: the account picker; consent is per tenant policy.
        "microsoft" => params(&[("prompt", "select_account")]),
        // Spotify documents `show_dialog=true` ("force the user to approve
        // the app again").
        "spotify" => params(&[("show_dialog", "true")]),
        // Wix has no user redirect (installs come from Wix).
        "wix" => BTreeMap::new(),
        _ => params(&[("prompt", "consent")]),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn params(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// GoHighLevel's published webhook signing key (Ed25519, SPKI DER in
/// base64), for `X-GHL-Signature`: PROVIDERS.md.
pub const GOHIGHLEVEL_WEBHOOK_KEY: &str =
    "MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=";

/// GoHighLevel's preset key, which is also its platform's name
/// (`src/platforms/gohighlevel/`).
pub const GOHIGHLEVEL: &str = "gohighlevel";

pub fn all() -> Vec<Provider> {
    vec![
        Provider {
            // PKCE off: GoHighLevel's OAuth documents do not confirm it
            // (PROVIDERS.md: unconfirmed), and an authorize URL with an
            // unknown parameter may be refused; `pkce = true` in the
            // providers file turns it on.
            pkce: false,
            // No scope of its own: a Marketplace app declares its scopes in
            // the app's settings, and the install asks for those. A
            // `scopes` list in the providers file is sent as `scope`.
            // `locations.readonly` names the location: without it the
            // lookup is refused and the connection shows the location id.
            scopes: Vec::new(),
            userinfo_url: Some(
                "https://services.leadconnectorhq.com/locations/{locationId}".into(),
            ),
            account_name: Some("/location/name".into()),
            keep_fields: strings(&[
                "locationId",
                "companyId",
                "userId",
                "userType",
                "approvedLocations",
                "planId",
                // A bulk install: whether it was one, whether every
                // location was approved, and whether later ones are too.
                "isBulkInstallation",
                "approveAllLocations",
                "installToFutureLocations",
            ]),
            // A location token names its location; an agency's (Company)
            // token only its company.
            account_id: strings(&["/locationId", "/companyId"]),
            // A location belongs to its agency's company.
            parent_account: Some("/companyId".into()),
            // No `user_type` on the exchange: the install says which
            // (a location or the agency). A refresh sends the stored
            // token's own `userType` (src/platforms/gohighlevel/).
            api_base_url: Some("https://services.leadconnectorhq.com".into()),
            refresh_token_lifetime_days: Some(365),
            // Every API call names the API version it was written against;
            // calls without it are rejected (PROVIDERS.md).
            api_headers: params(&[("Version", "2021-07-28")]),
            // GoHighLevel's documented API limits, per Marketplace app and
            // per resource (a location, or an agency's company): a burst
            // of 100 requests per 10 seconds and 200,000 per day. Every
            // instance spends them together, so the CRM's services never
            // earn GoHighLevel's 429 between them.
            api_budgets: vec![Budget::per_secs(100, 10), Budget::per_secs(200_000, 86_400)],
            // An agency connection (`token_params = { user_type = "Company" }`,
            // scopes `oauth.write` and `oauth.readonly`) serves its locations.
            location_tokens: true,
            // A location (or an agency's company) is one business.
            one_holder: true,
            // A location's Private Integration Token, checked with the
            // location lookup, keeps a client working until it installs
            // the app (PROVIDERS.md).
            private_tokens: Some("Private Integration Token".into()),
            // The user who installed the app, named on the claim page.
            installed_by: Some("/userId".into()),
            // The scopes a CRM's app commonly asks for (the operator sets
            // which, in the app and the providers file).
            scope_descriptions: described(&[
                ("contacts.readonly", "See your contacts"),
                ("contacts.write", "Add and change your contacts"),
                ("conversations.readonly", "Read your conversations"),
                ("conversations.write", "Manage your conversations"),
                ("conversations/message.readonly", "Read your messages"),
                (
                    "conversations/message.write",
                    "Send messages (SMS, email, chat) for you",
                ),
                ("calendars.readonly", "See your calendars"),
                ("calendars/events.readonly", "See your appointments"),
                ("calendars/events.write", "Book and change appointments"),
                ("locations.readonly", "See your business's details"),
                (
                    "opportunities.readonly",
                    "See your pipelines and opportunities",
                ),
                ("opportunities.write", "Add and change opportunities"),
                ("users.readonly", "See your team members"),
                (
                    "oauth.readonly",
                    "See the sub-accounts the app is installed in",
                ),
                ("oauth.write", "Connect the app to your sub-accounts"),
            ]),
            platform: Some(GOHIGHLEVEL.into()),
            webhook_key: Some(
                crate::crypto::ed25519_public_key(GOHIGHLEVEL_WEBHOOK_KEY)
                    .expect("GoHighLevel's published key reads"),
            ),
            // Where the CRM files what it creates for the tenant (opportunities).
            settings_schema: vec![
                SettingField::new(
                    "default_pipeline_id",
                    FieldType::String,
                    "Default pipeline id",
                ),
                SettingField::new("default_stage_id", FieldType::String, "Default stage id"),
            ],
            // Marketplace installs reach the callback with a code and no state.
            provider_initiated_installs: true,
            ..base(
                "gohighlevel",
                "GoHighLevel",
                "https://marketplace.gohighlevel.com/oauth/chooselocation",
                "https://services.leadconnectorhq.com/oauth/token",
            )
        },
        Provider {
            // The date-versioned OAuth API (2026-03): the same form bodies
            // as v3, whose endpoints HubSpot retires in 2027.
            revocation_url: Some("https://api.hubapi.com/oauth/2026-03/token/revoke".into()),
            // None by default: HubSpot refuses an install whose `scope` lacks
            // any scope the app marks required, and only the operator knows
            // the app's (set `scopes` in the providers file to exactly them).
            scopes: Vec::new(),
            keep_fields: strings(&["hub_id", "hub_domain"]),
            // Token introspection names the hub and the user who connected
            // it (PROVIDERS.md); the endpoint takes the token in the body,
            // never in a URL. The token response's hub id is the fallback.
            userinfo_url: Some("https://api.hubapi.com/oauth/2026-03/token/introspect".into()),
            identity: Identity::Introspect,
            account_id: strings(&["/hub_id", "/hubId"]),
            account_name: Some("/user".into()),
            account_label: Some("/hub_domain".into()),
            api_base_url: Some("https://api.hubapi.com".into()),
            // A hub is one business.
            one_holder: true,
            ..base(
                "hubspot",
                "HubSpot",
                "https://app.hubspot.com/oauth/authorize",
                "https://api.hubapi.com/oauth/2026-03/token",
            )
        },
        Provider {
            client_auth: ClientAuth::Basic,
            revocation_url: Some("https://auth.calendly.com/oauth/revoke".into()),
            // Calendly documents the client id and secret as form fields
            // of its revocation endpoint (not Basic, as at its token endpoint).
            revocation_client_auth: Some(ClientAuth::Post),
            userinfo_url: Some("https://api.calendly.com/users/me".into()),
            account_id: strings(&["/resource/uri"]),
            account_name: Some("/resource/name".into()),
            keep_fields: strings(&["owner", "organization"]),
            api_base_url: Some("https://api.calendly.com".into()),
            // The event type the CRM books by default (its `uri` at Calendly).
            settings_schema: vec![SettingField::new(
                "default_event_type_uri",
                FieldType::String,
                "Default event type URI",
            )],
            ..base(
                "calendly",
                "Calendly",
                "https://auth.calendly.com/oauth/authorize",
                "https://auth.calendly.com/oauth/token",
            )
        },
        Provider {
            revocation_url: Some("https://oauth2.googleapis.com/revoke".into()),
            userinfo_url: Some("https://openidconnect.googleapis.com/v1/userinfo".into()),
            account_id: strings(&["/sub"]),
            account_name: Some("/email".into()),
            issuer: Some("https://accounts.google.com".into()),
            // Google takes the account's `sub` (or email) as `login_hint`.
            login_hint: Some(LoginHint::AccountId),
            scope_descriptions: described(&[(
                "https://www.googleapis.com/auth/webmasters.readonly",
                "See your Search Console sites and their search data",
            )]),
            // Google's discovery document sets
            // authorization_response_iss_parameter_supported: every callback
            // carries iss, and one without it (or with another) is refused.
            iss_required: true,
            scopes: strings(&[
                "openid",
                "email",
                "https://www.googleapis.com/auth/webmasters.readonly",
            ]),
            authorize_params: params(&[("access_type", "offline"), ("prompt", "consent")]),
            rotates_refresh_tokens: false,
            api_base_url: Some("https://www.googleapis.com".into()),
            // The Search Console property the CRM reports on (`siteUrl`).
            settings_schema: vec![SettingField::new(
                "site_url",
                FieldType::String,
                "Search Console site URL",
            )],
            ..base(
                "google",
                "Google Search Console",
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
            )
        },
        Provider {
            client_auth: ClientAuth::Basic,
            userinfo_url: Some("https://api.spotify.com/v1/me".into()),
            account_id: strings(&["/id"]),
            account_name: Some("/display_name".into()),
            scopes: strings(&["user-read-email"]),
            scope_descriptions: described(&[("user-read-email", "See your email address")]),
            api_base_url: Some("https://api.spotify.com".into()),
            refresh_token_lifetime_days: Some(180),
            rotates_refresh_tokens: false,
            ..base(
                "spotify",
                "Spotify",
                "https://accounts.spotify.com/authorize",
                "https://accounts.spotify.com/api/token",
            )
        },
        Provider {
            // PKCE off: Instagram Login's documents do not confirm it
            // (PROVIDERS.md: unconfirmed); `pkce = true` turns it on.
            pkce: false,
            userinfo_url: Some("https://graph.instagram.com/me?fields=user_id,username".into()),
            account_id: strings(&["/user_id"]),
            account_name: Some("/username".into()),
            scopes: strings(&["instagram_business_basic"]),
            scope_descriptions: described(&[(
                "instagram_business_basic",
                "See your Instagram business profile and posts",
            )]),
            scope_separator: ",".into(),
            api_base_url: Some("https://graph.instagram.com".into()),
            refresh: RefreshStyle::Instagram,
            platform: Some("instagram".into()),
            rotates_refresh_tokens: false,
            ..base(
                "instagram",
                "Instagram",
                "https://api.instagram.com/oauth/authorize",
                "https://api.instagram.com/oauth/access_token",
            )
        },
        Provider {
            userinfo_url: Some("https://graph.microsoft.com/v1.0/me".into()),
            account_id: strings(&["/id"]),
            account_name: Some("/userPrincipalName".into()),
            scopes: strings(&["offline_access", "User.Read"]),
            // Microsoft takes the user principal name as `login_hint`.
            login_hint: Some(LoginHint::AccountName),
            scope_descriptions: described(&[("User.Read", "See your profile")]),
            api_base_url: Some("https://graph.microsoft.com".into()),
            ..base(
                "microsoft",
                "Microsoft",
                "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            )
        },
        Provider {
            // PKCE off: Bing Webmaster's OAuth documents do not confirm it
            // (PROVIDERS.md: unconfirmed); `pkce = true` turns it on.
            pkce: false,
            scopes: strings(&["webmaster.manage"]),
            scope_descriptions: described(&[(
                "webmaster.manage",
                "Manage your sites in Bing Webmaster Tools",
            )]),
            rotates_refresh_tokens: false,
            api_base_url: Some("https://ssl.bing.com/webmaster/api.svc/json".into()),
            ..base(
                "bing",
                "Bing Webmaster",
                "https://www.bing.com/webmasters/oauth/authorize",
                "https://www.bing.com/webmasters/oauth/token",
            )
        },
        Provider {
            // PKCE off: WordPress.com's classic OAuth documents do not
            // confirm it (PROVIDERS.md: unconfirmed); `pkce = true` turns it on.
            pkce: false,
            userinfo_url: Some("https://public-api.wordpress.com/rest/v1/me".into()),
            account_id: strings(&["/ID"]),
            account_name: Some("/username".into()),
            scopes: strings(&["global"]),
            scope_descriptions: described(&[("global", "Manage all your WordPress.com sites")]),
            keep_fields: strings(&["blog_id", "blog_url"]),
            api_base_url: Some("https://public-api.wordpress.com".into()),
            refresh: RefreshStyle::None,
            ..base(
                "wordpress",
                "WordPress.com",
                "https://public-api.wordpress.com/oauth2/authorize",
                "https://public-api.wordpress.com/oauth2/token",
            )
        },
        Provider {
            flow: Flow::ClientCredentials,
            // PKCE does not apply: no browser redirect, no authorization code.
            pkce: false,
            client_auth: ClientAuth::Json,
            userinfo_url: Some("https://www.wixapis.com/apps/v1/instance".into()),
            account_id: strings(&["/instance/instanceId"]),
            account_name: Some("/site/url".into()),
            api_base_url: Some("https://www.wixapis.com".into()),
            refresh: RefreshStyle::ClientCredentials,
            platform: Some("wix".into()),
            // A site is one business.
            one_holder: true,
            rotates_refresh_tokens: false,
            ..base("wix", "Wix", "", "https://www.wixapis.com/oauth2/token")
        },
    ]
}

/// The demo provider: the small authorization server inside this binary.
/// Its client credentials are internal, so it is enabled whenever it is on.
pub fn demo(settings: &Settings) -> Provider {
    let base_url = settings.base_url();
    Provider {
        revocation_url: Some(format!("{base_url}/demo/oauth/revoke")),
        userinfo_url: Some(format!("{base_url}/demo/api/me")),
        account_id: strings(&["/id"]),
        account_name: Some("/name".into()),
        issuer: Some(format!("{base_url}/demo")),
        // Ours: every answer of the demo server carries `iss`.
        iss_required: true,
        scopes: strings(&["profile", "contacts.read"]),
        scope_descriptions: described(&[("contacts.read", "See your contacts")]),
        api_base_url: Some(format!("{base_url}/demo/api")),
        client_id_env: "TETHER_DEMO_CLIENT_ID".into(),
        client_secret_env: "TETHER_DEMO_CLIENT_SECRET".into(),
        credentials: Some((
            "tether-demo".into(),
            crate::crypto::Secret::new("demo-secret-not-for-production".into()),
        )),
        ..base(
            "demo",
            "Demo",
            &format!("{base_url}/demo/oauth/authorize"),
            &format!("{base_url}/demo/oauth/token"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_urls_fill_placeholders_from_the_token_response_and_only_with_plain_ids() {
        use serde_json::json;
        let mut p = all()
            .into_iter()
            .find(|p| p.key.as_str() == "gohighlevel")
            .unwrap();
        assert_eq!(
            p.identity_url(&json!({"locationId": "loc_123"})).as_deref(),
            Some("https://services.leadconnectorhq.com/locations/loc_123")
        );
        // An agency token has no location: no lookup.
        assert_eq!(p.identity_url(&json!({"companyId": "c_9"})), None);
        for odd in ["../admin", "a/b", "a?b", "", ".."] {
            assert_eq!(p.identity_url(&json!({ "locationId": odd })), None, "{odd}");
        }
        p.userinfo_url = Some("https://api.example/me".into());
        assert_eq!(
            p.identity_url(&json!({})).as_deref(),
            Some("https://api.example/me")
        );
    }

    #[test]
    fn every_code_flow_preset_can_ask_for_its_consent_screen() {
        for p in all() {
            let asks = p
                .consent_params
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v.as_str()));
            let expected = match p.key.as_ref() {
                "google" => Some(("prompt", "consent select_account")),
                "microsoft" => Some(("prompt", "select_account")),
                "spotify" => Some(("show_dialog", "true")),
                "wix" => None,
                _ => Some(("prompt", "consent")),
            };
            assert_eq!(asks, expected, "{}", p.key);
            assert_eq!(
                p.flow == Flow::AuthorizationCode,
                asks.is_some(),
                "{}",
                p.key
            );
        }
    }

    /// The platforms whose OAuth documents confirm PKCE (PROVIDERS.md).
    const PKCE_DOCUMENTED: [&str; 5] = ["hubspot", "calendly", "google", "spotify", "microsoft"];

    #[test]
    fn hubspot_uses_the_date_versioned_oauth_api_and_asks_no_scope_of_its_own() {
        let hubspot = all()
            .into_iter()
            .find(|p| p.key.as_str() == "hubspot")
            .unwrap();
        // developers.hubspot.com, "Migrate ... to the latest date-based
        // versioned API": POST /oauth/2026-03/token, .../token/introspect,
        // .../token/revoke, with the same bodies.
        assert_eq!(
            hubspot.token_url,
            "https://api.hubapi.com/oauth/2026-03/token"
        );
        assert_eq!(
            hubspot.userinfo_url.as_deref(),
            Some("https://api.hubapi.com/oauth/2026-03/token/introspect")
        );
        assert_eq!(
            hubspot.revocation_url.as_deref(),
            Some("https://api.hubapi.com/oauth/2026-03/token/revoke")
        );
        // Every required scope of the app, and only the operator knows them.
        assert!(hubspot.scopes.is_empty());
    }

    #[test]
    fn pkce_is_on_exactly_for_the_presets_whose_platform_documents_it() {
        let presets = all();
        assert_eq!(presets.len(), 10);
        for p in &presets {
            assert_eq!(
                p.pkce,
                PKCE_DOCUMENTED.contains(&p.key.as_str()),
                "{}: PKCE should be {} (PROVIDERS.md)",
                p.key,
                if p.pkce { "off" } else { "on" }
            );
        }
        for key in PKCE_DOCUMENTED {
            assert!(presets.iter().any(|p| p.key.as_str() == key), "{key}");
        }
    }
}
