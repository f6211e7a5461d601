//! The `QUOTAD_*` variables, laid over the file's document.
//!
//! Each variable's value gets a span of its own past the end of the file, so an
//! error at that span is blamed on the variable, not on a line of the file.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::settings::{self, TIERS_VAR};
use super::{ConfigError, Origin};

/// A variable the environment holds: its name, the setting it sets, its text.
pub(super) struct Var {
    pub name: String,
    pub setting: Option<&'static settings::Setting>,
    pub raw: String,
}

/// The variables `env` holds for known settings, in the table's order.
pub(super) fn read_env(env: impl Fn(&str) -> Option<String>) -> Vec<Var> {
    let mut vars: Vec<Var> = settings::SETTINGS
        .iter()
        .filter_map(|setting| {
            let name = settings::env_name(setting.path);
            env(&name).map(|raw| Var {
                name,
                setting: Some(setting),
                raw,
            })
        })
        .collect();
    if let Some(raw) = env(TIERS_VAR) {
        vars.push(Var {
            name: TIERS_VAR.to_owned(),
            setting: None,
            raw,
        });
    }
    vars
}

/// Sets every variable in `root`, spans from `first` on; returns each one's span.
pub(super) fn lay_over<'a>(
    root: &mut DeTable<'a>,
    vars: &'a [Var],
    first: usize,
) -> Result<Vec<(Range<usize>, &'a Var)>, ConfigError> {
    let mut spans = Vec::with_capacity(vars.len());
    let mut next = first;
    for var in vars {
        let span = next..next + var.raw.len() + 1;
        next = span.end;
        let (path, value) = match var.setting {
            Some(setting) => (setting.path, setting.kind.read_var(&var.raw)),
            None => ("tiers", DeValue::Table(tiers_from_env(var, span.start)?)),
        };
        set_path(root, path, Spanned::new(span.clone(), value), &span);
        spans.push((span, var));
    }
    Ok(spans)
}

/// `QUOTAD_TIERS` parsed as a TOML table, its spans moved to the variable's own.
fn tiers_from_env<'a>(var: &'a Var, offset: usize) -> Result<DeTable<'a>, ConfigError> {
    let table = DeTable::parse(&var.raw).map_err(|e| ConfigError::Setting {
        setting: "tiers".to_owned(),
        origin: Origin::Env(var.name.clone()),
        problem: format!(
            "expected a TOML table such as `free = {{ monthly_limit = 5 }}`: {}",
            e.message()
        ),
    })?;
    Ok(shift_table(table.into_inner(), offset))
}

fn shift_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (key, value) in table {
        let key = Spanned::new(shift(key.span(), by), key.into_inner());
        out.insert(key, shift_value(value, by));
    }
    out
}

fn shift_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = shift(value.span(), by);
    let value = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shift_table(table, by)),
        DeValue::Array(items) => {
            DeValue::Array(items.into_iter().map(|v| shift_value(v, by)).collect())
        }
        other => other,
    };
    Spanned::new(span, value)
}

fn shift(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

/// Sets `path` to `value`, making the tables on the way. Keys and made tables get
/// the empty span at the variable's start, so that an error at the value's span
/// names the value's own path (and `got` its text), not a table on the way.
fn set_path<'a>(
    table: &mut DeTable<'a>,
    path: &'a str,
    value: Spanned<DeValue<'a>>,
    var_span: &Range<usize>,
) {
    let span = var_span.start..var_span.start;
    let key = |name: &'a str| Spanned::new(span.clone(), name.into());
    match path.split_once('.') {
        None => {
            // Remove first: an equal key keeps its old span on insert.
            table.remove(path);
            table.insert(key(path), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(key(head))
                .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
            if !entry.get_ref().is_table() {
                *entry = Spanned::new(span.clone(), DeValue::Table(DeTable::new()));
            }
            if let DeValue::Table(inner) = entry.get_mut() {
                set_path(inner, rest, value, var_span);
            }
        }
    }
}
