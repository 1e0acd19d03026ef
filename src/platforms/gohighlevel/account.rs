//! The one reader of what a GoHighLevel connection keeps in its metadata:
//! the fields of its token response that say which account it is
//! (`locationId`, `companyId`, `userType`, `approvedLocations`, kept by the
//! preset's `keep_fields`) and, for a location token minted from an agency,
//! which agency (`agency`).

use crate::ids::AccountId;
use serde_json::Value;

pub const LOCATION_ID: &str = "locationId";
pub const COMPANY_ID: &str = "companyId";
pub const USER_TYPE: &str = "userType";
pub const APPROVED_LOCATIONS: &str = "approvedLocations";
/// Set by Tether on a location token it minted: the agency's account id.
pub const AGENCY: &str = "agency";

/// The `userType` of an agency's token.
pub const COMPANY: &str = "Company";

/// A GoHighLevel connection's account, as its metadata says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Account {
    pub location_id: Option<AccountId>,
    pub company_id: Option<AccountId>,
    /// `Company` (an agency's token) or `Location`.
    pub user_type: Option<String>,
    /// The locations a bulk install approved (an agency's token).
    pub approved_locations: Vec<AccountId>,
    /// The agency account a location token was minted from.
    pub agency: Option<AccountId>,
}

impl Account {
    pub fn of(metadata: &Value) -> Account {
        let text = |name: &str| metadata.get(name).and_then(Value::as_str);
        // An id no account could have is no id.
        let id = |name: &str| text(name).and_then(AccountId::check);
        Account {
            location_id: id(LOCATION_ID),
            company_id: id(COMPANY_ID),
            user_type: text(USER_TYPE).map(str::to_string),
            approved_locations: metadata
                .get(APPROVED_LOCATIONS)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(AccountId::check)
                        .collect()
                })
                .unwrap_or_default(),
            agency: id(AGENCY),
        }
    }

    /// Whether this is an agency's (Company) token.
    pub fn is_agency(&self) -> bool {
        self.user_type.as_deref() == Some(COMPANY)
    }

    /// The metadata fragments (compact JSON) that every agency row whose
    /// install approved locations holds: the database narrows by them.
    pub fn bulk_install_fragments() -> [String; 2] {
        [
            format!("\"{USER_TYPE}\":\"{COMPANY}\""),
            format!("\"{APPROVED_LOCATIONS}\":["),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agency_and_a_minted_location_read_back() {
        let agency = Account::of(&serde_json::json!({
            "companyId": "c1", "userType": "Company", "approvedLocations": ["l1", 7, "l2"]
        }));
        assert!(agency.is_agency());
        assert_eq!(agency.company_id.as_deref(), Some("c1"));
        assert_eq!(agency.approved_locations, ["l1", "l2"]);
        let location = Account::of(&serde_json::json!({
            "locationId": "l1", "userType": "Location", "agency": "c1"
        }));
        assert!(!location.is_agency());
        assert_eq!(location.agency.as_deref(), Some("c1"));
        assert_eq!(Account::of(&serde_json::json!("junk")), Account::default());
        let compact = serde_json::to_string(&serde_json::json!({
            "userType": "Company", "approvedLocations": ["l1"]
        }))
        .unwrap();
        for fragment in Account::bulk_install_fragments() {
            assert!(compact.contains(&fragment), "{fragment} in {compact}");
        }
    }
}
