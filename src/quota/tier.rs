//! Tiers and the tier catalogue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A named plan: a monthly limit (`None` = unlimited) and an audit retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// A typo (`monthy_limit`) must not silently make a tier unlimited.
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Units per calendar month; absent means unlimited.
    #[serde(default)]
    pub monthly_limit: Option<u64>,
    /// Days an audit record of this tier is kept.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    30
}

/// The tiers every node of a fleet must agree on, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Catalogue(BTreeMap<String, Tier>);

impl Default for Catalogue {
    fn default() -> Self {
        let tier = |limit: Option<u64>, days: u32| Tier {
            monthly_limit: limit,
            retention_days: days,
        };
        Catalogue(BTreeMap::from([
            ("free".to_owned(), tier(Some(1_000), 7)),
            ("pro".to_owned(), tier(Some(10_000), 30)),
            ("premium".to_owned(), tier(Some(50_000), 90)),
            ("enterprise".to_owned(), tier(None, 365)),
        ]))
    }
}

impl Catalogue {
    /// A catalogue of exactly these tiers.
    pub fn new(tiers: BTreeMap<String, Tier>) -> Self {
        Catalogue(tiers)
    }

    /// The tier called `name`, if the catalogue has it.
    pub fn get(&self, name: &str) -> Option<&Tier> {
        self.0.get(name)
    }

    /// Tiers in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tier)> {
        self.0.iter().map(|(name, tier)| (name.as_str(), tier))
    }

    /// Whether the catalogue has no tiers at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A short hex digest of the catalogue; equal catalogues give equal fingerprints.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, tier) in self.iter() {
            let limit = tier.monthly_limit.map_or(-1, |l| l as i128);
            hasher.update(format!("{name}\0{limit}\0{}\n", tier.retention_days));
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// `name limit name limit …` as the consume script takes them (-1 = unlimited).
    pub fn script_args(&self) -> Vec<String> {
        self.iter()
            .flat_map(|(name, tier)| {
                let limit = tier.monthly_limit.map_or(-1, |l| l as i128);
                [name.to_owned(), limit.to_string()]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Catalogue::default();
        assert_eq!(c.get("free").unwrap().monthly_limit, Some(1_000));
        assert_eq!(c.get("free").unwrap().retention_days, 7);
        assert_eq!(c.get("pro").unwrap().monthly_limit, Some(10_000));
        assert_eq!(c.get("premium").unwrap().monthly_limit, Some(50_000));
        assert_eq!(c.get("enterprise").unwrap().monthly_limit, None);
        assert_eq!(c.get("enterprise").unwrap().retention_days, 365);
    }

    #[test]
    fn fingerprint_changes_with_any_limit() {
        let a = Catalogue::default();
        let mut tiers = a.0.clone();
        tiers.get_mut("pro").unwrap().monthly_limit = Some(10_001);
        assert_ne!(a.fingerprint(), Catalogue::new(tiers).fingerprint());
        assert_eq!(a.fingerprint(), Catalogue::default().fingerprint());
    }
}
