//! Connections: one row per (tenant, provider, account), holding the whole
//! token set as one AEAD ciphertext bound to the row.
//!
//! One file per question: the row and what can be read off it (`row`),
//! storing a grant (`grant`), lookups (`lookup`), leases (`lease`),
//! how a refresh ended (`outcome`), disconnecting (`erase`), key
//! rotation (`sealed`) and search (`search`).

mod erase;
mod grant;
mod lease;
mod lookup;
mod outcome;
mod row;
mod sealed;
mod search;

pub use grant::Grant;
pub use outcome::Refreshed;
pub use row::{unknown_account, Connection, Kind, Status, TokenSet};
pub use sealed::SealedRow;
pub use search::Search;
