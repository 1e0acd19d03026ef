//! Instagram (Instagram Login for business): the code it hands out ends in
//! `#_`, the token it exchanges it for lasts an hour and is traded at once
//! for a long-lived one (60 days), which is renewed with
//! `ig_refresh_token` instead of a refresh token. PROVIDERS.md, Instagram.

use crate::app::App;
use crate::crypto::Secret;
use crate::oauth::client::{self, ProviderError};
use crate::oauth::token::TokenResponse;
use crate::platform::{Answer, Due, Platform};
use crate::providers::Provider;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

/// Where the Graph endpoints are when the provider names no API URL.
const GRAPH: &str = "https://graph.instagram.com";

pub struct Instagram;

impl Platform<App> for Instagram {
    fn name(&self) -> &'static str {
        "instagram"
    }

    fn exchange<'a>(
        &'a self,
        http: &'a reqwest::Client,
        provider: &'a Provider,
        code: &'a str,
        redirect_uri: &'a str,
        verifier: Option<&'a str>,
    ) -> Option<BoxFuture<'a, Answer>> {
        Some(
            async move {
                // Instagram appends "#_" to codes it hands out.
                let code = code.trim_end_matches("#_");
                let short =
                    client::exchange_code(http, provider, code, redirect_uri, verifier).await?;
                long_lived(http, provider, &short).await
            }
            .boxed(),
        )
    }

    fn renew<'a>(
        &'a self,
        http: &'a reqwest::Client,
        provider: &'a Provider,
        due: Due<'a>,
    ) -> Option<BoxFuture<'a, Answer>> {
        Some(
            async move {
                let req = http.get(graph(provider, "/refresh_access_token")).query(&[
                    ("grant_type", "ig_refresh_token"),
                    ("access_token", due.tokens.access_token.expose().as_str()),
                ]);
                client::token_response(provider, req).await
            }
            .boxed(),
        )
    }
}

/// A Graph endpoint of the provider.
fn graph(provider: &Provider, path: &str) -> String {
    let base = provider.api_base_url.as_deref().unwrap_or(GRAPH);
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Trades a short-lived token (1 h) for a long-lived one (60 days).
async fn long_lived(
    http: &reqwest::Client,
    provider: &Provider,
    short: &TokenResponse,
) -> Result<TokenResponse, ProviderError> {
    let (_, secret) = client::credentials(provider)?;
    let req = http.get(graph(provider, "/access_token")).query(&[
        ("grant_type", "ig_exchange_token"),
        ("client_secret", secret.expose().as_str()),
        ("access_token", short.tokens.access_token.expose().as_str()),
    ]);
    let mut long = client::token_response(provider, req).await?;
    // Keep what only the short-lived response carried (user_id, permissions).
    if let (Some(long_raw), Some(short_raw)) = (long.raw.as_object_mut(), short.raw.as_object()) {
        for (k, v) in short_raw {
            if k != "access_token" && k != "expires_in" {
                long_raw.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        long.tokens.raw = Secret::new(long.raw.clone());
    }
    if long.scopes.is_none() {
        long.scopes = short.scopes.clone();
    }
    Ok(long)
}
