//! Bench flags: `--name value` after `cargo bench --bench NAME --`, else the variable
//! `QUOTAD_BENCH_NAME` (upper case, `-` as `_`), else the default. A flag the bench
//! does not know, or a value that does not parse, stops the bench: a typo must not
//! silently measure the default.

use std::str::FromStr;

/// The command line of one bench, checked against the flags it knows.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    /// Reads the command line; panics on a flag not in `known`.
    pub fn parse(known: &[&str]) -> Args {
        // `cargo bench` passes `--bench` to every bench binary.
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        for arg in &args {
            if let Some(name) = arg.strip_prefix("--") {
                assert!(
                    known.contains(&name),
                    "unknown flag --{name}; this bench knows --{}",
                    known.join(", --")
                );
            }
        }
        Args { args }
    }

    /// The raw value of `--name` or its variable, if given.
    pub fn raw(&self, name: &str) -> Option<String> {
        let flag = format!("--{name}");
        self.args
            .iter()
            .position(|a| *a == flag)
            .map(|i| {
                self.args
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| panic!("{flag} needs a value"))
            })
            .or_else(|| std::env::var(env_name(name)).ok())
    }

    /// `--name` parsed, else `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> T {
        self.optional(name).unwrap_or(default)
    }

    /// `--name` parsed, if given.
    pub fn optional<T: FromStr>(&self, name: &str) -> Option<T> {
        self.raw(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--{name} {v:?}: not a valid value"))
        })
    }

    /// `--name` as a comma-separated list, else `default`.
    pub fn list(&self, name: &str, default: &[usize]) -> Vec<usize> {
        match self.raw(name) {
            None => default.to_vec(),
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("--{name} {v:?}: expected numbers like 1,16,64"))
                })
                .collect(),
        }
    }

    /// `--name 0|1` (or true/false), else `default`.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        match self.raw(name).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(v) => panic!("--{name} {v:?}: expected 0 or 1"),
        }
    }
}

/// `QUOTAD_BENCH_` + the flag's name in upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    format!("QUOTAD_BENCH_{}", name.to_uppercase().replace('-', "_"))
}
