//! GoHighLevel's agency endpoints: minting a location's token with the
//! agency's, and listing the agency's locations. They live beside its API,
//! not its token URL.

use crate::oauth::client::{self, ProviderError};
use crate::oauth::token::TokenResponse;
use crate::providers::Provider;
use reqwest::header::ACCEPT;
use serde_json::Value;

/// Mints a location's token with the agency's (Company) token,
/// `POST /oauth/locationToken` with `companyId` and `locationId` in a form.
/// The answer is a token response for that location.
pub async fn mint_location_token(
    http: &reqwest::Client,
    provider: &Provider,
    agency_access_token: &str,
    company_id: &str,
    location_id: &str,
) -> Result<TokenResponse, ProviderError> {
    let req = client::with_api_headers(
        http.post(client::api_url(provider, "/oauth/locationToken")?),
        provider,
    )
    .bearer_auth(agency_access_token)
    .form(&[("companyId", company_id), ("locationId", location_id)]);
    client::token_response(provider, req).await
}

/// The agency's locations and whether the app is installed in
/// each, `GET /oauth/installedLocations` (one page of up to `limit`).
pub async fn installed_locations(
    http: &reqwest::Client,
    provider: &Provider,
    agency_access_token: &str,
    company_id: &str,
    app_id: &str,
    limit: usize,
) -> Result<Value, ProviderError> {
    let limit = limit.to_string();
    let req = client::with_api_headers(
        http.get(client::api_url(provider, "/oauth/installedLocations")?),
        provider,
    )
    .bearer_auth(agency_access_token)
    .query(&[
        ("companyId", company_id),
        ("appId", app_id),
        ("limit", limit.as_str()),
    ])
    .header(ACCEPT, "application/json");
    let res = req.send().await.map_err(client::transport)?;
    let (status, retry_after, body) = client::read_body(res).await?;
    if !(200..300).contains(&status) {
        return Err(client::classify(status, retry_after, &body));
    }
    serde_json::from_slice(&body)
        .map_err(|_| ProviderError::transient("installedLocations did not answer JSON"))
}
