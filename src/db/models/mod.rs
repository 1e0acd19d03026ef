//! One module per table; each owns its queries.

/// Stores `$ty` (an enum deriving `AsExpression` and `FromSqlRow` as
/// `Text`) as its `as_str()`, and reads it back with `$parse` (`&str` to
/// `Option<$ty>`); a value this version does not know is an error naming
/// `$column`, not a guess.
macro_rules! text_column {
    ($ty:ty, $column:literal, $parse:expr) => {
        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $ty
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let name = String::from_sql(bytes)?;
                $parse(&name).ok_or_else(|| {
                    format!(
                        "{} holds '{name}', which this version does not know",
                        $column
                    )
                    .into()
                })
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $ty
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                self.as_str().to_sql(out)
            }
        }
    };
}
pub(crate) use text_column;

pub mod account_setting;
pub mod activity;
pub mod api_key;
pub mod connect_link;
pub mod connect_session;
pub mod connection;
pub mod event;
pub mod instance;
pub mod integration_setting;
pub mod key_check;
pub mod oauth_state;
pub mod pending_install;
pub mod provider_flag;
pub mod proxy_budget;
pub mod seen_webhook;
pub mod sso_nonce;
pub mod tenant;
pub mod usage;
pub mod user;
pub mod webhook;
