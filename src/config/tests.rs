use std::collections::HashMap;
use std::path::PathBuf;

use super::source::describe;
use super::*;
use crate::quota::MAX_EXACT_INT;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A config file in a temp dir; the dir lives as long as the returned guard.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotad.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn error_of(text: &str, vars: &[(&str, &str)]) -> (String, PathBuf) {
    let (_dir, path) = file(text);
    let err = Config::load(Some(&path), env(vars)).unwrap_err();
    (err.to_string(), path)
}

fn env_error(vars: &[(&str, &str)]) -> String {
    Config::load(None, env(vars)).unwrap_err().to_string()
}

#[test]
fn defaults_follow_the_spec() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.redis_timeout_ms, 250);
    assert_eq!(c.shards, 64);
    assert_eq!(c.audit.db_path, PathBuf::from("quotad-audit.db"));
    assert_eq!(c.audit.max_backlog, 1_000_000);
    assert_eq!(c.catalogue(), Catalogue::default());
    assert_eq!(c.http, HttpConfig::default());
    assert_eq!(c.http.header_timeout_secs, 10);
    assert_eq!(c.http.body_timeout_secs, 10);
    assert_eq!(c.http.max_connections, 10_000);
    assert_eq!(c.batch.max_decisions, 256);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.redis_ca_file, None);
    assert_eq!(c.admin_token, None);
}

#[test]
fn environment_wins_over_the_file() {
    let (_dir, path) = file(
        "shards = 8\n[audit]\nmax_backlog = 5\n[tiers.gold]\nmonthly_limit = 3\nretention_days = 1\n",
    );
    let c = Config::load(
        Some(&path),
        env(&[
            ("QUOTAD_AUDIT_MAX_BACKLOG", "7"),
            ("QUOTAD_AUDIT_DB", "x.db"),
            ("QUOTAD_AUDIT_WRITER", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(c.shards, 8);
    assert_eq!(c.audit.max_backlog, 7);
    assert_eq!(c.audit.db_path, PathBuf::from("x.db"));
    assert!(!c.audit.writer);
    assert_eq!(c.catalogue().get("gold").unwrap().monthly_limit, Some(3));
    assert!(c.catalogue().get("free").is_none());
}

#[test]
fn tiers_from_the_environment_and_unlimited_without_limit() {
    let c = Config::load(None, env(&[("QUOTAD_TIERS", "x = { retention_days = 2 }")])).unwrap();
    assert_eq!(c.catalogue().get("x").unwrap().monthly_limit, None);
}

#[test]
fn a_typo_in_a_tier_field_names_the_field_its_line_and_the_fields_expected() {
    let (err, path) = error_of(
        "listen = \"127.0.0.1:9\"\n[tiers.free]\nmonthy_limit = 5\n",
        &[],
    );
    let prefix = format!(
        "tiers.free.monthy_limit ({} line 3): unknown field; expected one of ",
        path.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.contains("monthly_limit, retention_days"), "{err}");
}

#[test]
fn a_typo_in_a_tier_from_the_environment_names_the_variable() {
    let err = env_error(&[("QUOTAD_TIERS", "free = { monthy_limit = 5 }")]);
    assert!(
        err.starts_with("tiers.free.monthy_limit (from QUOTAD_TIERS): unknown field; expected"),
        "{err}"
    );
}

#[test]
fn an_unknown_top_level_setting_names_its_line() {
    let (err, path) = error_of("shards = 8\nlisten_addr = \"x\"\n", &[]);
    let prefix = format!(
        "listen_addr ({} line 2): unknown field; expected one of listen, ",
        path.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn an_unknown_audit_setting_names_its_path_and_line() {
    let (err, path) = error_of("[audit]\nmax_backlogg = 5\n", &[]);
    let prefix = format!(
        "audit.max_backlogg ({} line 2): unknown field; expected one of ",
        path.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn a_duplicate_key_names_the_setting_and_the_line_of_the_repeat() {
    let (err, path) = error_of("[audit]\nmax_backlog = 1\nmax_backlog = 2\n", &[]);
    assert_eq!(
        err,
        format!(
            "audit.max_backlog ({} line 3): given twice; a setting or table may appear only once",
            path.display()
        )
    );
}

#[test]
fn a_duplicate_top_level_key_names_the_setting_and_its_line() {
    let (err, path) = error_of("shards = 2\n\nshards = 3\n", &[]);
    assert_eq!(
        err,
        format!(
            "shards ({} line 3): given twice; a setting or table may appear only once",
            path.display()
        )
    );
}

#[test]
fn invalid_toml_names_the_line() {
    let (err, path) = error_of("shards = 2\nlisten = \n", &[]);
    let prefix = format!("listen ({} line 2): not valid TOML: ", path.display());
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn a_garbage_listen_variable_names_the_variable_and_the_expected_form() {
    assert_eq!(
        env_error(&[("QUOTAD_LISTEN", "garbage")]),
        "listen (from QUOTAD_LISTEN): expected a socket address such as 127.0.0.1:8080, got \"garbage\""
    );
}

#[test]
fn a_bad_backlog_variable_is_mapped_back_to_its_setting() {
    assert_eq!(
        env_error(&[("QUOTAD_AUDIT_MAX_BACKLOG", "x")]),
        "audit.max_backlog (from QUOTAD_AUDIT_MAX_BACKLOG): expected an integer from 1 to 9007199254740991, got \"x\""
    );
}

#[test]
fn a_value_out_of_range_in_the_file_names_its_line_and_the_range() {
    let (err, path) = error_of("listen = \"127.0.0.1:1\"\nshards = 0\n", &[]);
    assert_eq!(
        err,
        format!(
            "shards ({} line 2): expected an integer from 1 to 999, got 0",
            path.display()
        )
    );
}

#[test]
fn a_wrong_type_in_the_file_names_what_was_expected() {
    let (err, path) = error_of("[audit]\nwriter = \"yes\"\n", &[]);
    assert_eq!(
        err,
        format!(
            "audit.writer ({} line 2): expected true or false, got \"yes\"",
            path.display()
        )
    );
}

#[test]
fn a_variable_overrides_a_bad_file_value_and_is_blamed_for_its_own() {
    let (err, _path) = error_of("shards = 0\n", &[("QUOTAD_SHARDS", "1000")]);
    assert_eq!(
        err,
        "shards (from QUOTAD_SHARDS): expected an integer from 1 to 999, got \"1000\""
    );
}

#[test]
fn an_unknown_enum_value_lists_the_accepted_ones() {
    assert_eq!(
        env_error(&[("QUOTAD_AUDIT_ON_BACKLOG", "drop")]),
        "audit.on_backlog (from QUOTAD_AUDIT_ON_BACKLOG): expected one of reject, trim, got \"drop\""
    );
}

#[test]
fn a_tier_limit_above_2_pow_53_minus_1_is_refused() {
    let (err, path) = error_of("[tiers.free]\nmonthly_limit = 9007199254740992\n", &[]);
    assert_eq!(
        err,
        format!(
            "tiers.free.monthly_limit ({} line 2): expected an integer from 0 to 9007199254740991, got 9007199254740992",
            path.display()
        )
    );
}

#[test]
fn a_tier_limit_above_2_pow_53_minus_1_from_the_environment_is_refused() {
    assert_eq!(
        env_error(&[("QUOTAD_TIERS", "big = { monthly_limit = 9007199254740992 }")]),
        "tiers.big.monthly_limit (from QUOTAD_TIERS): expected an integer from 0 to 9007199254740991, got 9007199254740992"
    );
}

#[test]
fn a_tier_limit_of_2_pow_53_minus_1_is_accepted() {
    let (_dir, path) = file("[tiers.free]\nmonthly_limit = 9007199254740991\n");
    let c = Config::load(Some(&path), env(&[])).unwrap();
    assert_eq!(
        c.catalogue().get("free").unwrap().monthly_limit,
        Some(MAX_EXACT_INT)
    );
    assert_eq!(MAX_EXACT_INT, 9_007_199_254_740_991);
}

#[test]
fn an_empty_tier_catalogue_is_refused() {
    assert_eq!(
        env_error(&[("QUOTAD_TIERS", "")]),
        "tiers (from QUOTAD_TIERS): expected at least one tier"
    );
}

#[test]
fn invalid_toml_in_quotad_tiers_names_the_variable() {
    let err = env_error(&[("QUOTAD_TIERS", "free = {")]);
    assert!(
        err.starts_with("tiers (from QUOTAD_TIERS): expected a TOML table such as"),
        "{err}"
    );
}

#[test]
fn the_new_settings_come_from_file_and_environment() {
    let (_dir, path) = file("log_format = \"json\"\n[http]\nheader_timeout_secs = 3\n");
    let c = Config::load(
        Some(&path),
        env(&[
            ("QUOTAD_HTTP_BODY_TIMEOUT_SECS", "4"),
            ("QUOTAD_HTTP_MAX_CONNECTIONS", "5"),
            ("QUOTAD_REDIS_CA_FILE", "ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(
        c.http,
        HttpConfig {
            header_timeout_secs: 3,
            body_timeout_secs: 4,
            max_connections: 5,
        }
    );
    assert_eq!(c.redis_ca_file, Some(PathBuf::from("ca.pem")));
}

#[test]
fn http_settings_below_1_are_refused() {
    assert_eq!(
        env_error(&[("QUOTAD_HTTP_MAX_CONNECTIONS", "0")]),
        "http.max_connections (from QUOTAD_HTTP_MAX_CONNECTIONS): expected an integer from 1 to 9007199254740991, got \"0\""
    );
    let (err, path) = error_of("[http]\nheader_timeout_secs = 0\n", &[]);
    assert_eq!(
        err,
        format!(
            "http.header_timeout_secs ({} line 2): expected an integer from 1 to 9007199254740991, got 0",
            path.display()
        )
    );
}

#[test]
fn an_unknown_log_format_lists_text_and_json() {
    assert_eq!(
        env_error(&[("QUOTAD_LOG_FORMAT", "xml")]),
        "log_format (from QUOTAD_LOG_FORMAT): expected one of text, json, got \"xml\""
    );
}

#[test]
fn the_admin_token_is_the_first_line_of_the_token_file_trimmed() {
    let (_dir, token_file) = file("  tok-first-line \nsecond line\n");
    let c = Config::load(
        None,
        env(&[("QUOTAD_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.admin_token.as_deref(), Some("tok-first-line"));
    assert_eq!(c.admin_token_file, Some(token_file));
}

#[test]
fn admin_token_wins_over_the_token_file() {
    let (_dir, token_file) = file("from-file\n");
    let token_file = token_file.to_str().unwrap();
    let from_env = Config::load(
        None,
        env(&[
            ("QUOTAD_ADMIN_TOKEN_FILE", token_file),
            ("QUOTAD_ADMIN_TOKEN", "from-env"),
        ]),
    )
    .unwrap();
    assert_eq!(from_env.admin_token.as_deref(), Some("from-env"));
    let (_dir2, config) = file("admin_token = \"from-config\"\n");
    let from_config = Config::load(
        Some(&config),
        env(&[("QUOTAD_ADMIN_TOKEN_FILE", token_file)]),
    )
    .unwrap();
    assert_eq!(from_config.admin_token.as_deref(), Some("from-config"));
}

#[test]
fn an_empty_token_file_is_refused_naming_the_setting() {
    let (_dir, token_file) = file("\nsecret-on-line-2\n");
    let err = env_error(&[("QUOTAD_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())]);
    assert_eq!(
        err,
        format!(
            "admin_token_file (from QUOTAD_ADMIN_TOKEN_FILE): expected the admin token on the first line of {}, found none",
            token_file.display()
        )
    );
}

#[test]
fn an_unreadable_token_file_is_refused_naming_the_setting_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let (err, path) = error_of(
        &format!("admin_token_file = {:?}\n", missing.to_str().unwrap()),
        &[],
    );
    let prefix = format!(
        "admin_token_file ({} line 1): cannot read {}: ",
        path.display(),
        missing.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn errors_never_show_the_admin_token() {
    let err = env_error(&[("QUOTAD_ADMIN_TOKEN", "")]);
    assert_eq!(
        err,
        "admin_token (from QUOTAD_ADMIN_TOKEN): expected a non-empty string"
    );
    let (err, _path) = error_of("admin_token = \"secret-token-value\n", &[]);
    assert!(!err.contains("secret-token-value"), "{err}");
    let (err, _path) = error_of("admin_token = 12345678\n", &[]);
    assert!(!err.contains("12345678"), "{err}");
}

#[test]
fn serde_messages_are_put_in_config_words() {
    assert_eq!(
        describe("unknown field `x`, expected `a` or `b`"),
        "unknown field; expected one of a, b"
    );
    assert_eq!(
        describe("unknown field `x`, expected one of `a`, `b`, `c`"),
        "unknown field; expected one of a, b, c"
    );
    assert_eq!(
        describe("unknown field `x`, there are no fields"),
        "unknown field; this table takes no settings"
    );
    assert_eq!(
        describe("unknown variant `drop`, expected `reject` or `trim`"),
        "expected one of reject, trim"
    );
    assert_eq!(
        describe("invalid type: string \"x\", expected u64"),
        "expected a non-negative integer"
    );
    assert_eq!(
        describe("invalid type: integer `5`, expected struct Tier"),
        "expected a table"
    );
}

#[test]
fn env_names_follow_the_paths_with_the_one_short_exception() {
    assert_eq!(env_name("audit.max_backlog"), "QUOTAD_AUDIT_MAX_BACKLOG");
    assert_eq!(
        env_name("http.header_timeout_secs"),
        "QUOTAD_HTTP_HEADER_TIMEOUT_SECS"
    );
    assert_eq!(env_name("admin_token_file"), "QUOTAD_ADMIN_TOKEN_FILE");
    assert_eq!(env_name("audit.db_path"), "QUOTAD_AUDIT_DB");
}

#[test]
fn batch_max_decisions_comes_from_file_and_environment_within_range() {
    let c = Config::load(None, env(&[("QUOTAD_BATCH_MAX_DECISIONS", "1")])).unwrap();
    assert_eq!(c.engine_settings().max_batch, 1);
    let err = Config::load(None, env(&[("QUOTAD_BATCH_MAX_DECISIONS", "0")])).unwrap_err();
    assert!(err.to_string().contains("batch.max_decisions"), "{err}");
}
