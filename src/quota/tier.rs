//! Tiers and the tier catalogue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RateLimit;

/// A named plan: a monthly limit (`None` = unlimited), an audit retention, and short
/// rate windows decided together with the month (SPEC §9).
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
    /// Rate windows beside the month, shortest first once in a [`Catalogue`]; none by
    /// default. Each `window_secs` appears at most once (the config refuses repeats).
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
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
            rate_limits: Vec::new(),
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
    /// A catalogue of exactly these tiers, each tier's windows shortest first.
    pub fn new(mut tiers: BTreeMap<String, Tier>) -> Self {
        for tier in tiers.values_mut() {
            tier.rate_limits.sort_by_key(|w| w.window_secs);
        }
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

    /// How many tiers the catalogue has.
    pub fn len(&self) -> usize {
        self.0.len()
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
            hasher.update(format!("{name}\0{limit}\0{}", tier.retention_days));
            // Only when present, so a catalogue without windows keeps the fingerprint
            // it had before windows existed (a rolling upgrade is no mismatch).
            for w in &tier.rate_limits {
                hasher.update(format!("\0{}/{}", w.limit, w.window_secs));
            }
            hasher.update("\n");
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// Per tier `name, monthly limit (-1 = unlimited), k, then k × (window_secs,
    /// limit)`, as the consume script takes them.
    pub fn script_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (name, tier) in self.iter() {
            let limit = tier.monthly_limit.map_or(-1, |l| l as i128);
            args.extend([name.to_owned(), limit.to_string()]);
            args.push(tier.rate_limits.len().to_string());
            for w in &tier.rate_limits {
                args.extend([w.window_secs.to_string(), w.limit.to_string()]);
            }
        }
        args
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

    #[test]
    fn fingerprint_covers_the_windows_and_keeps_its_value_without_them() {
        // The value of the default catalogue before windows existed.
        let a = Catalogue::default();
        assert_eq!(a.fingerprint(), "d6d7dd873182840e");
        let with = |limit: u64, window_secs: u64| {
            let mut tiers = a.0.clone();
            tiers.get_mut("free").unwrap().rate_limits = vec![RateLimit { limit, window_secs }];
            Catalogue::new(tiers).fingerprint()
        };
        assert_ne!(with(10, 1), a.fingerprint());
        assert_ne!(with(10, 1), with(10, 2));
        assert_ne!(with(10, 1), with(11, 1));
    }

    #[test]
    fn script_args_carry_each_tiers_windows_shortest_first() {
        let tier = Tier {
            monthly_limit: Some(5),
            retention_days: 1,
            rate_limits: vec![
                RateLimit {
                    limit: 600,
                    window_secs: 60,
                },
                RateLimit {
                    limit: 10,
                    window_secs: 1,
                },
            ],
        };
        let c = Catalogue::new(BTreeMap::from([("gold".to_owned(), tier)]));
        assert_eq!(c.script_args(), ["gold", "5", "2", "1", "10", "60", "600"]);
    }
}
