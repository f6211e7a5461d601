//! The settings as one spanned TOML document, and where each of its parts came from.
//!
//! The file's text is parsed with spans; each `QUOTAD_*` variable's value is laid
//! over it with a span of its own past the end of the file. Any error toml reports
//! carries a span, so one lookup tells the setting (the entry at that span) and
//! its origin (a line of the file, or a variable).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::overlay::{self, Var};
use super::settings::{self, Kind};
use super::ConfigError;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line (from 1) of the config file.
    File {
        /// The file, as given.
        path: PathBuf,
        /// The line.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// Nobody set it: the built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(var) => write!(f, "from {var}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One key of the merged document: its dotted path and the spans of key and value.
struct Entry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

/// The file and variables behind the merged document, and an index of its entries.
pub(super) struct Sources<'a> {
    file: Option<(&'a Path, &'a str)>,
    vars: Vec<(Range<usize>, &'a Var)>,
    entries: Vec<Entry>,
}

/// The file's document with every variable laid over it (the environment wins).
pub(super) fn merge<'a>(
    file: Option<(&'a Path, &'a str)>,
    vars: &'a [Var],
) -> Result<(DeTable<'a>, Sources<'a>), ConfigError> {
    let mut root = match file {
        Some((path, text)) => parse_file(path, text)?,
        None => DeTable::new(),
    };
    // Variables' spans start past the end of the file (EOF errors point at its length).
    let first = file.map_or(0, |(_, text)| text.len() + 1);
    let vars = overlay::lay_over(&mut root, vars, first)?;
    let entries = index(&root);
    Ok((
        root,
        Sources {
            file,
            vars,
            entries,
        },
    ))
}

fn parse_file<'a>(path: &Path, text: &'a str) -> Result<DeTable<'a>, ConfigError> {
    let (partial, errors) = DeTable::parse_recoverable(text);
    let Some(error) = errors.into_iter().next() else {
        return Ok(partial.into_inner());
    };
    let sources = Sources {
        file: Some((path, text)),
        vars: Vec::new(),
        entries: index(partial.get_ref()),
    };
    let span = error.span().unwrap_or(text.len()..text.len());
    let origin = sources.origin(&span);
    if error.message() == "duplicate key" {
        let key = text.get(span.clone()).unwrap_or_default();
        let setting = sources
            .earlier_key(key, span.start)
            .unwrap_or_else(|| key.to_owned());
        let problem = "given twice; a setting or table may appear only once".to_owned();
        return Err(ConfigError::Setting {
            setting,
            origin,
            problem,
        });
    }
    // The message, never toml's Display: that quotes the line, which may hold a token.
    let problem = format!("not valid TOML: {}", error.message());
    Err(match sources.path_at(&span) {
        Some((setting, _)) => ConfigError::Setting {
            setting,
            origin,
            problem,
        },
        None => ConfigError::Syntax { origin, problem },
    })
}

fn index(root: &DeTable<'_>) -> Vec<Entry> {
    fn walk(prefix: &str, key: Range<usize>, value: &Spanned<DeValue<'_>>, out: &mut Vec<Entry>) {
        out.push(Entry {
            path: prefix.to_owned(),
            key,
            value: value.span(),
        });
        match value.get_ref() {
            DeValue::Table(table) => {
                for (k, v) in table.iter() {
                    walk(&format!("{prefix}.{}", k.get_ref()), k.span(), v, out);
                }
            }
            DeValue::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    // An element has no key; a span no error can carry stands in.
                    walk(&format!("{prefix}[{i}]"), usize::MAX..usize::MAX, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in root.iter() {
        walk(k.get_ref(), k.span(), v, &mut out);
    }
    out
}

impl Sources<'_> {
    /// Where the text at `span` came from.
    pub(super) fn origin(&self, span: &Range<usize>) -> Origin {
        if let Some((path, text)) = self.file {
            if span.start <= text.len() {
                let line = text[..span.start].matches('\n').count() + 1;
                return Origin::File {
                    path: path.to_owned(),
                    line,
                };
            }
        }
        self.var_at(span)
            .map_or(Origin::Default, |(_, var)| Origin::Env(var.name.clone()))
    }

    /// Where the setting at `path` came from (its value's span).
    pub(super) fn origin_of(&self, path: &str) -> Origin {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .map_or(Origin::Default, |e| self.origin(&e.value))
    }

    fn var_at(&self, span: &Range<usize>) -> Option<&(Range<usize>, &Var)> {
        self.vars
            .iter()
            .find(|(range, _)| range.contains(&span.start))
    }

    /// The value at `span` as it was written: TOML from the file, or the variable's text.
    fn written(&self, span: &Range<usize>) -> String {
        if let Some((_, text)) = self.file {
            if let Some(literal) = text.get(span.clone()) {
                return literal.trim().to_owned();
            }
        }
        match self.var_at(span) {
            Some((range, var)) => {
                let inner = span.start - range.start..span.end - range.start;
                match var.raw.get(inner) {
                    // A span inside the variable (`QUOTAD_TIERS`): a TOML literal.
                    Some(literal) if span.end < range.end => literal.trim().to_owned(),
                    _ => format!("{:?}", var.raw),
                }
            }
            None => String::new(),
        }
    }

    /// The dotted path of the entry at `span`, and whether the span is its key.
    fn path_at(&self, span: &Range<usize>) -> Option<(String, bool)> {
        if let Some(e) = self.entries.iter().find(|e| e.key == *span) {
            return Some((e.path.clone(), true));
        }
        self.entries
            .iter()
            .filter(|e| e.value.start <= span.start && span.end <= e.value.end)
            .min_by_key(|e| e.value.len())
            .map(|e| (e.path.clone(), false))
    }

    /// The path of the last key named `name` that starts at or before `pos`.
    fn earlier_key(&self, name: &str, pos: usize) -> Option<String> {
        self.entries
            .iter()
            .filter(|e| e.key.start <= pos && e.path.rsplit('.').next() == Some(name))
            .max_by_key(|e| e.key.start)
            .map(|e| e.path.clone())
    }

    /// A value `kind` does not accept, at `path`.
    pub(super) fn bad_value(&self, path: &str, span: &Range<usize>, kind: Kind) -> ConfigError {
        ConfigError::Setting {
            setting: path.to_owned(),
            origin: self.origin(span),
            problem: self.expected_got(path, span, &kind.expected()),
        }
    }

    fn expected_got(&self, path: &str, span: &Range<usize>, expected: &str) -> String {
        if settings::is_secret(path) {
            format!("expected {expected}")
        } else {
            format!("expected {expected}, got {}", self.written(span))
        }
    }

    /// A deserialization error, as the setting, its origin and what was expected.
    pub(super) fn de_error(&self, error: &toml::de::Error) -> ConfigError {
        let problem = describe(error.message());
        let Some(span) = error.span() else {
            return ConfigError::Invalid(problem);
        };
        let origin = self.origin(&span);
        match self.path_at(&span) {
            Some((setting, is_key)) => {
                let problem = match problem.strip_prefix("expected ") {
                    Some(expected) if !is_key => self.expected_got(&setting, &span, expected),
                    _ => problem,
                };
                ConfigError::Setting {
                    setting,
                    origin,
                    problem,
                }
            }
            None => ConfigError::Syntax { origin, problem },
        }
    }
}

/// serde's message in the words of a config file (field names, no Rust types).
pub(super) fn describe(message: &str) -> String {
    let names = |list: &str| {
        list.split('`')
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return match rest.split_once("expected ") {
            Some((_, list)) => format!("unknown field; expected one of {}", names(list)),
            None => "unknown field; this table takes no settings".to_owned(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((_, list)) = rest.split_once("expected ") {
            return format!("expected one of {}", names(list));
        }
    }
    if message.starts_with("invalid type: ") || message.starts_with("invalid value: ") {
        if let Some((_, expected)) = message.rsplit_once(", expected ") {
            return format!("expected {}", plain_type(expected));
        }
    }
    if message == "wanted string or table" {
        return "expected a string".to_owned();
    }
    message.to_owned()
}

fn plain_type(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "a boolean" => "true or false",
        e if e.starts_with("struct ") || e.starts_with("a map") => "a table",
        e if e.starts_with("a sequence") => "an array",
        e => e,
    }
}
