// One schema for both backends, in portable types only (Text ids, UTC
// Timestamp, Binary ciphertext, Bool). Kept by hand in step with migrations/.

diesel::table! {
    tenants (id) {
        id -> Text,
        external_id -> Text,
        name -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        tenant_id -> Text,
        email -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        created_at -> Timestamp,
        last_login_at -> Nullable<Timestamp>,
        session_generation -> BigInt,
    }
}

diesel::table! {
    connections (id) {
        id -> Text,
        tenant_id -> Text,
        provider -> Text,
        account_id -> Text,
        account_name -> Nullable<Text>,
        status -> Text,
        scopes -> Text,
        token_ciphertext -> Nullable<Binary>,
        key_id -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        refresh_expires_at -> Nullable<Timestamp>,
        next_refresh_at -> Nullable<Timestamp>,
        version -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        failure_count -> Integer,
        last_error -> Nullable<Text>,
        metadata -> Text,
        last_refreshed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        is_default -> Bool,
        parent_account_id -> Nullable<Text>,
        tags -> Nullable<Text>,
        error_since -> Nullable<Timestamp>,
        kind -> Text,
    }
}

diesel::table! {
    oauth_states (id) {
        id -> Text,
        state_hash -> Text,
        tenant_id -> Text,
        user_id -> Nullable<Text>,
        session_binding -> Nullable<Text>,
        provider -> Text,
        pkce_ciphertext -> Nullable<Binary>,
        key_id -> Nullable<Text>,
        redirect_uri -> Text,
        return_to -> Nullable<Text>,
        popup -> Bool,
        expires_at -> Timestamp,
        consumed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        tags -> Nullable<Text>,
        embed_origin -> Nullable<Text>,
        reconnect_account -> Nullable<Text>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        name -> Text,
        prefix -> Text,
        secret_hash -> Text,
        tenant_id -> Nullable<Text>,
        is_admin -> Bool,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        scopes -> Nullable<Text>,
        providers -> Nullable<Text>,
    }
}

diesel::table! {
    events (id) {
        id -> Text,
        tenant_id -> Text,
        connection_id -> Nullable<Text>,
        provider -> Text,
        kind -> Text,
        actor -> Text,
        detail -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_outbox (id) {
        id -> Text,
        event_id -> Nullable<Text>,
        payload -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        channel -> Text,
        provider -> Nullable<Text>,
        account_id -> Nullable<Text>,
        held_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    key_checks (key_id) {
        key_id -> Text,
        ciphertext -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sso_nonces (nonce_hash) {
        nonce_hash -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    provider_flags (provider) {
        provider -> Text,
        error -> Text,
        flagged_at -> Timestamp,
    }
}

diesel::table! {
    connect_links (token_hash) {
        token_hash -> Text,
        tenant_id -> Text,
        provider -> Text,
        created_by -> Text,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        email -> Nullable<Text>,
        tags -> Nullable<Text>,
        account -> Nullable<Text>,
    }
}

diesel::table! {
    connect_sessions (token_hash) {
        token_hash -> Text,
        tenant_id -> Text,
        providers -> Text,
        created_by -> Text,
        email -> Nullable<Text>,
        tags -> Nullable<Text>,
        uses_left -> Integer,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    integration_settings (tenant_id, provider) {
        tenant_id -> Text,
        provider -> Text,
        enabled -> Bool,
        settings -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    pending_installs (id) {
        id -> Text,
        provider -> Text,
        account_id -> Text,
        account_name -> Nullable<Text>,
        scopes -> Text,
        metadata -> Text,
        token_ciphertext -> Binary,
        key_id -> Text,
        token_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        parent_account_id -> Nullable<Text>,
    }
}

diesel::table! {
    seen_webhooks (provider, webhook_id) {
        provider -> Text,
        webhook_id -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    account_settings (tenant_id, provider, account_id) {
        tenant_id -> Text,
        provider -> Text,
        account_id -> Text,
        settings -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    connection_usage (connection_id, key_name, kind, day) {
        connection_id -> Text,
        key_name -> Text,
        kind -> Text,
        day -> Date,
        uses -> BigInt,
        last_at -> Timestamp,
    }
}

diesel::table! {
    proxy_budgets (provider, account_id, window_secs, bucket) {
        provider -> Text,
        account_id -> Text,
        window_secs -> BigInt,
        bucket -> BigInt,
        spent -> BigInt,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(connection_usage -> connections (connection_id));
diesel::joinable!(events -> connections (connection_id));
diesel::joinable!(account_settings -> tenants (tenant_id));
diesel::joinable!(users -> tenants (tenant_id));
diesel::joinable!(integration_settings -> tenants (tenant_id));
diesel::joinable!(connect_links -> tenants (tenant_id));
diesel::joinable!(connections -> tenants (tenant_id));
diesel::table! {
    instances (id) {
        id -> Text,
        started_at -> Timestamp,
        heartbeat_at -> Timestamp,
        key_ids -> Nullable<Text>,
        session_key_check -> Nullable<Text>,
    }
}

diesel::joinable!(oauth_states -> tenants (tenant_id));
diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(connect_sessions -> tenants (tenant_id));
diesel::joinable!(events -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    users,
    connections,
    oauth_states,
    api_keys,
    events,
    webhook_outbox,
    key_checks,
    sso_nonces,
    provider_flags,
    connect_links,
    connect_sessions,
    integration_settings,
    pending_installs,
    seen_webhooks,
    instances,
    account_settings,
    connection_usage,
    proxy_budgets,
);
