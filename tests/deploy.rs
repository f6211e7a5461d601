//! The deploy kit (`deploy/`, `Dockerfile`, `quotad health`): the alert rules and their
//! unit tests through promtool, every dashboard query as a recording rule, the compose
//! file's structure, a real Prometheus scraping a real `quotad serve`, and the health
//! check. Needs Debian's prometheus package (`promtool` and `prometheus`).

mod common;
mod deploy_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestRedis;
use deploy_support::{self as d, QuotadProcess, TestPrometheus};
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value as Yaml;

/// Metric families the dashboard or the alerts use that quotad does not export yet,
/// each with the issue that adds it. The live test asserts that each is really absent:
/// remove a name when its feature lands.
const NOT_YET_EXPORTED: &[&str] = &[
    "quotad_redis_appendonly",         // issue 7 §2: whether Redis persists
    "quotad_batch_size",               // issue 8: batched decisions
    "quotad_audit_writer_active",      // issue 9: one audit writer per deployment
    "quotad_rate_limited_total",       // issue 10: rate limits
    "quotad_threshold_events_total",   // issue 11: threshold alerts
    "quotad_webhook_deliveries_total", // issue 11: webhook deliveries
    "quotad_reservations_total",       // issue 11: reserve and settle
];

/// Grafana's variables as promtool sees them; `${x}` forms before `$x`.
const DASHBOARD_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("${job}", "quotad"),
    ("$job", "quotad"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
];

/// How long the live tests wait for Prometheus to see what quotad exports.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);

fn path(rel: &str) -> String {
    d::repo_file(rel).display().to_string()
}

/// Every PromQL expression of the dashboard's panels, as written (variables included).
fn dashboard_queries() -> Vec<String> {
    fn walk(node: &Json, out: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                if let Some(Json::Array(targets)) = map.get("targets") {
                    out.extend(
                        targets
                            .iter()
                            .filter_map(|t| t["expr"].as_str().map(str::to_owned)),
                    );
                }
                map.values().for_each(|v| walk(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard()["panels"], &mut out);
    out
}

fn dashboard() -> Json {
    serde_json::from_str(&d::read("deploy/grafana/quotad.json")).expect("the dashboard is JSON")
}

/// `expr` with Grafana's variables replaced by values promtool accepts.
fn substituted(expr: &str) -> String {
    let out = DASHBOARD_VARIABLES
        .iter()
        .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value));
    assert!(
        !out.contains('$'),
        "a variable is left unsubstituted in {out}"
    );
    out
}

/// `(alert name, expression)` of every rule in alerts.yml.
fn alert_rules() -> Vec<(String, String)> {
    let rules = d::yaml("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            let name = r["alert"].as_str().expect("every rule is an alert");
            (
                name.to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

/// Metric names (`quotad_…`) an expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.match_indices("quotad_")
        .filter(|(i, _)| {
            let before = expr[..*i].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The family of a series name: a histogram's `_bucket`, `_sum` and `_count` are one.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every metric name the dashboard and the alerts select.
fn used_metric_names() -> BTreeSet<String> {
    let dashboard = dashboard_queries().into_iter();
    let alerts = alert_rules().into_iter().map(|(_, expr)| expr);
    dashboard
        .chain(alerts)
        .flat_map(|e| metric_names(&e))
        .collect()
}

/// A rules file that records each of `exprs`, for `promtool check rules`.
fn recording_rules(exprs: &[String]) -> String {
    let rules: Vec<Json> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    serde_yaml_ng::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))
        .expect("rules serialize")
}

/// Checks `rules` (YAML text) with promtool from a temp file.
fn check_rules(rules: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    d::promtool(&["check", "rules", &file.display().to_string()])
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = d::promtool_ok(&["check", "rules", &path("deploy/prometheus/alerts.yml")]);
    let expected = format!("SUCCESS: {} rules found", alert_rules().len());
    assert!(out.contains(&expected), "{out}");
}

#[test]
fn alert_unit_tests_pass_promtool_test_rules() {
    let out = d::promtool_ok(&["test", "rules", &path("deploy/prometheus/alerts_test.yml")]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let tests = d::yaml("deploy/prometheus/alerts_test.yml");
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .expect("alert_rule_test")
                .iter()
        })
        .map(|c| {
            let fires = !c["exp_alerts"]
                .as_sequence()
                .expect("exp_alerts")
                .is_empty();
            (
                c["alertname"].as_str().expect("alertname").to_owned(),
                fires,
            )
        })
        .collect();
    for (alert, _) in alert_rules() {
        for fires in [true, false] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{alert} has no unit test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

#[test]
fn every_dashboard_query_passes_promtool_as_a_recording_rule() {
    let queries: Vec<String> = dashboard_queries().iter().map(|q| substituted(q)).collect();
    let out = check_rules(&recording_rules(&queries));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("SUCCESS: {} rules found", queries.len());
    assert!(stdout.contains(&expected), "{stdout}");
}

#[test]
fn a_broken_query_fails_the_same_check() {
    let broken = vec!["sum by (tier) (rate(quotad_decisions_total[1m])".to_owned()];
    let out = check_rules(&recording_rules(&broken));
    assert!(!out.status.success(), "promtool accepted {broken:?}");
}

#[test]
fn every_dashboard_query_is_scoped_by_the_job_variable() {
    let variables: Vec<Json> = dashboard()["templating"]["list"]
        .as_array()
        .expect("templating")
        .clone();
    let names: BTreeSet<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["datasource", "job", "instance"]));
    let instance = variables.iter().find(|v| v["name"] == "instance").unwrap();
    assert_eq!(
        (&instance["multi"], &instance["allValue"]),
        (&json!(true), &json!(".*"))
    );
    for query in dashboard_queries() {
        assert!(
            query.contains("job=\"$job\""),
            "not scoped by $job: {query}"
        );
    }
}

#[test]
fn the_dashboard_shows_decisions_latency_redis_audit_batches_and_rate_limits() {
    let used: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names(q))
        .map(|n| family(&n).to_owned())
        .collect();
    for needed in [
        "quotad_decisions_total",
        "quotad_decision_duration_seconds",
        "quotad_redis_errors_total",
        "quotad_audit_backlog",
        "quotad_audit_writer_active",
        "quotad_batch_size",
        "quotad_rate_limited_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn prometheus_config_passes_promtool_check() {
    let out = d::promtool_ok(&["check", "config", &path("deploy/prometheus/prometheus.yml")]);
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
}

/// The compose services that run the quotad image.
fn quotad_services(compose: &Yaml) -> Vec<(String, Yaml)> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["image"] == "quotad:local")
        .map(|(name, s)| (name.as_str().expect("name").to_owned(), s.clone()))
        .collect()
}

#[test]
fn prometheus_scrapes_every_quotad_node_of_the_compose_file() {
    let compose = d::yaml("deploy/compose.yaml");
    let nodes: BTreeSet<String> = quotad_services(&compose)
        .into_iter()
        .map(|(name, _)| format!("{name}:8080"))
        .collect();
    let config = d::yaml("deploy/prometheus/prometheus.yml");
    let job = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "quotad")
        .expect("a job named quotad, as the alerts and the dashboard select");
    let targets: BTreeSet<String> = job["static_configs"][0]["targets"]
        .as_sequence()
        .expect("targets")
        .iter()
        .map(|t| t.as_str().expect("target").to_owned())
        .collect();
    assert_eq!(targets, nodes);
}

fn env_of<'a>(service: &'a Yaml, var: &str) -> Option<&'a str> {
    service["environment"][var].as_str()
}

#[test]
fn compose_runs_redis_with_aof_one_writer_and_two_serving_nodes() {
    let compose = d::yaml("deploy/compose.yaml");
    let redis = &compose["services"]["redis"];
    let command: Vec<&str> = redis["command"]
        .as_sequence()
        .expect("redis command as a list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        command.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{command:?}"
    );
    assert_eq!(redis["volumes"][0], "redis-data:/data");

    let nodes = quotad_services(&compose);
    let mut writers: Vec<&str> = nodes
        .iter()
        .map(|(_, s)| env_of(s, "QUOTAD_AUDIT_WRITER").expect("QUOTAD_AUDIT_WRITER is set"))
        .collect();
    writers.sort();
    assert_eq!(writers, ["false", "false", "true"]);
    for (name, node) in &nodes {
        let writes = env_of(node, "QUOTAD_AUDIT_WRITER") == Some("true");
        let volumes = node["volumes"].as_sequence().cloned().unwrap_or_default();
        assert_eq!(
            volumes.iter().any(|v| v == "audit-data:/var/lib/quotad"),
            writes,
            "{name}: the audit volume belongs to the writer alone"
        );
        assert_eq!(
            env_of(node, "QUOTAD_LISTEN"),
            Some("0.0.0.0:8080"),
            "{name}"
        );
        assert_eq!(
            env_of(node, "QUOTAD_ADMIN_TOKEN"),
            None,
            "{name}: token in env"
        );
        let secret = node["secrets"][0].as_str().expect("a secret");
        let file = format!("/run/secrets/{secret}");
        assert_eq!(
            env_of(node, "QUOTAD_ADMIN_TOKEN_FILE"),
            Some(file.as_str()),
            "{name}"
        );
    }
}

/// `source:target[:mode]` of a short volume entry.
fn mount(entry: &Yaml) -> (String, String) {
    let text = entry.as_str().expect("short volume syntax");
    let mut parts = text.split(':');
    let (source, target) = (parts.next().unwrap(), parts.next().expect("a target"));
    (source.to_owned(), target.to_owned())
}

#[test]
fn compose_names_only_defined_services_volumes_secrets_and_existing_files() {
    let compose = d::yaml("deploy/compose.yaml");
    let top = |key: &str| -> BTreeSet<String> {
        compose[key]
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (services, volumes, secrets) = (top("services"), top("volumes"), top("secrets"));
    let deploy = d::repo_file("deploy");
    let mut used_volumes = BTreeSet::new();
    for name in &services {
        let service = &compose["services"][name.as_str()];
        let depends: Vec<String> = match &service["depends_on"] {
            Yaml::Mapping(m) => m
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            Yaml::Sequence(s) => s
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for dep in depends {
            assert!(services.contains(&dep), "{name} depends on unknown {dep}");
        }
        for entry in service["volumes"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
        {
            let (source, _) = mount(&entry);
            if source.starts_with('.') {
                assert!(
                    deploy.join(&source).exists(),
                    "{name} mounts missing {source}"
                );
            } else {
                assert!(
                    volumes.contains(&source),
                    "{name} uses undeclared volume {source}"
                );
                used_volumes.insert(source);
            }
        }
        for secret in service["secrets"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
        {
            let secret = secret.as_str().expect("short secret syntax").to_owned();
            assert!(
                secrets.contains(&secret),
                "{name} uses undeclared secret {secret}"
            );
        }
        if let Some(context) = service["build"]["context"].as_str() {
            let dockerfile = service["build"]["dockerfile"].as_str().expect("dockerfile");
            assert!(
                deploy.join(context).join(dockerfile).is_file(),
                "{name}: no {dockerfile}"
            );
        }
    }
    assert_eq!(used_volumes, volumes, "every declared volume is used");
    for secret in &secrets {
        let file = compose["secrets"][secret.as_str()]["file"]
            .as_str()
            .expect("file secret");
        let dir = deploy.join(file).parent().expect("a directory").to_owned();
        assert!(
            dir.join(".gitignore").is_file(),
            "{secret}: its directory keeps it out of git"
        );
    }
}

#[test]
fn grafana_provisioning_loads_the_mounted_dashboard_from_the_compose_prometheus() {
    let compose = d::yaml("deploy/compose.yaml");
    let mounts: Vec<(String, String)> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .map(mount)
        .collect();
    let target_of = |source: &str| {
        mounts
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, t)| t.clone())
    };
    assert_eq!(
        target_of("./grafana/provisioning").as_deref(),
        Some("/etc/grafana/provisioning")
    );
    let dashboard_file = target_of("./grafana/quotad.json").expect("the dashboard is mounted");
    let provider = d::yaml("deploy/grafana/provisioning/dashboards/quotad.yaml");
    let dashboards_dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    assert_eq!(format!("{dashboards_dir}/quotad.json"), dashboard_file);

    let datasource =
        &d::yaml("deploy/grafana/provisioning/datasources/prometheus.yaml")["datasources"][0];
    assert_eq!(datasource["url"], "http://prometheus:9090");
    assert_eq!(
        compose["services"]["prometheus"]["ports"][0],
        "127.0.0.1:9090:9090"
    );
    let variable = dashboard()["templating"]["list"][0].clone();
    assert_eq!(variable["name"], "datasource");
    assert_eq!(
        datasource["uid"].as_str(),
        variable["current"]["value"].as_str()
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in d::read("Dockerfile").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn dockerfile_runs_as_a_numeric_user_with_a_data_volume_and_its_own_health_check() {
    let instructions = dockerfile_instructions();
    let starting = |word: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|i| i.starts_with(word))
            .collect()
    };
    assert_eq!(
        starting("FROM ").len(),
        2,
        "a build stage and a runtime stage"
    );
    assert_eq!(starting("USER "), ["USER 10001:10001"]);
    assert_eq!(starting("VOLUME "), ["VOLUME /var/lib/quotad"]);
    let env = starting("ENV ");
    assert_eq!(env.len(), 1);
    let vars: Vec<&str> = env[0].split_whitespace().skip(1).collect();
    assert_eq!(
        vars,
        [
            "QUOTAD_LISTEN=0.0.0.0:8080",
            "QUOTAD_AUDIT_DB=/var/lib/quotad/audit.db",
            "QUOTAD_ADMIN_TOKEN_FILE=/run/secrets/quotad_admin_token"
        ]
    );
    let healthcheck = starting("HEALTHCHECK ");
    assert_eq!(healthcheck.len(), 1);
    assert!(
        healthcheck[0].ends_with(r#"CMD ["quotad", "health"]"#),
        "{healthcheck:?}"
    );
    assert!(
        !instructions.iter().any(|i| i.contains("curl")),
        "no curl in the image"
    );
}

/// Prometheus's config for the live tests: the kit's file, its quotad job pointed at
/// `target`, scraping and evaluating every second.
fn live_prometheus_config(target: &str) -> String {
    let mut config = d::yaml("deploy/prometheus/prometheus.yml");
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs");
    jobs.retain(|j| j["job_name"] == "quotad");
    jobs[0]["static_configs"] =
        serde_yaml_ng::from_str(&format!("[{{targets: ['{target}']}}]")).expect("static_configs");
    serde_yaml_ng::to_string(&config).expect("config serializes")
}

/// Waits until quotad's own `/metrics` shows `name`.
async fn wait_for_metric(quotad: &QuotadProcess, name: &str) {
    let client = d::client();
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        if let Ok(response) = client.get(quotad.url("/metrics")).send().await {
            if response.text().await.is_ok_and(|t| t.contains(name)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "quotad never exported {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A key, one admitted consume (persisted by the writer), then Redis gone and one
/// failed consume: after it quotad has exported every series it knows.
async fn exercise(quotad: &QuotadProcess, redis: &mut TestRedis) {
    let client = d::client();
    let created: Json = client
        .post(quotad.url("/v1/keys"))
        .bearer_auth(d::ADMIN_TOKEN)
        .json(&json!({"tier": "free"}))
        .send()
        .await
        .expect("create a key")
        .json()
        .await
        .expect("key JSON");
    let key = created["key"].as_str().expect("a generated key").to_owned();
    let consume = || {
        client
            .post(quotad.url("/v1/consume"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(consume().await.expect("consume").status(), 200);
    wait_for_metric(quotad, "quotad_audit_batch_duration_seconds_bucket").await;
    redis.kill();
    assert_eq!(consume().await.expect("consume").status(), 503);
    wait_for_metric(quotad, "quotad_redis_errors_total").await;
}

#[tokio::test]
async fn prometheus_scraping_quotad_finds_every_metric_the_dashboard_and_alerts_use() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let prometheus = TestPrometheus::start(&live_prometheus_config(&quotad.addr)).await;
    exercise(&quotad, &mut redis).await;

    let used = used_metric_names();
    let expected: BTreeSet<&String> = used
        .iter()
        .filter(|n| !NOT_YET_EXPORTED.contains(&family(n)))
        .collect();
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let names: BTreeSet<String> = loop {
        let data = prometheus.api("label/__name__/values").await;
        let names: BTreeSet<String> = serde_json::from_value(data).expect("a list of names");
        if expected.iter().all(|n| names.contains(*n)) || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let missing: Vec<&&String> = expected.iter().filter(|n| !names.contains(**n)).collect();
    assert!(missing.is_empty(), "Prometheus never saw {missing:?}");
    let landed: Vec<&String> = names
        .iter()
        .filter(|n| NOT_YET_EXPORTED.contains(&family(n)))
        .collect();
    assert!(
        landed.is_empty(),
        "exported now, drop from NOT_YET_EXPORTED: {landed:?}"
    );
}

#[tokio::test]
async fn prometheus_evaluates_every_alert_rule_against_a_live_quotad_without_error() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let prometheus = TestPrometheus::start(&live_prometheus_config(&quotad.addr)).await;
    exercise(&quotad, &mut redis).await;

    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let rules: Vec<Json> = loop {
        let data = prometheus.api("rules").await;
        let rules: Vec<Json> = data["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").clone())
            .collect();
        if rules.iter().all(|r| r["health"] != "unknown") || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let loaded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = alert_rules().into_iter().map(|(name, _)| name).collect();
    assert_eq!(loaded, expected);
    let unhealthy: Vec<(&Json, &Json)> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| (&r["name"], &r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "{unhealthy:?}\n{}", prometheus.log());
}

/// `quotad health ARGS` with `env`, as a container's HEALTHCHECK runs it.
fn health(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quotad"))
        .arg("health")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("quotad health runs")
}

fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text
}

#[test]
fn health_exits_0_with_one_line_when_quotad_answers() {
    let redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let out = health(&["--url", &quotad.url("")], &[]);
    assert_eq!(out.status.code(), Some(0));
    let line = one_line(&out.stdout);
    assert!(
        line.contains(&format!("{} answered 200", quotad.url("/healthz"))),
        "{line}"
    );
}

#[test]
fn health_defaults_to_the_listen_setting_with_wildcards_on_loopback() {
    let redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    let port = quotad.addr.rsplit(':').next().expect("a port");
    let out = health(
        &["--ready"],
        &[("QUOTAD_LISTEN", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(out.status.code(), Some(0));
    let line = one_line(&out.stdout);
    assert!(
        line.contains(&format!("{} answered 200", quotad.url("/readyz"))),
        "{line}"
    );
}

#[test]
fn health_ready_exits_1_when_redis_is_down() {
    let mut redis = TestRedis::start();
    let quotad = QuotadProcess::start(&redis);
    redis.kill();
    let out = health(&["--ready", "--url", &quotad.url("")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("answered 503"), "{line}");
    assert!(line.contains("backend_unavailable"), "{line}");
    // The process itself is still alive.
    assert_eq!(
        health(&["--url", &quotad.url("")], &[]).status.code(),
        Some(0)
    );
}

#[test]
fn health_exits_1_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}", d::free_port());
    let out = health(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains(&format!("{url}/healthz")), "{line}");
}

#[test]
fn health_gives_up_on_a_silent_server_within_its_timeout() {
    // The kernel accepts the connection into the backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = health(&["--url", &url], &[]);
    let bound = quotad::health::TIMEOUT + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out.stderr);
    assert!(line.contains("no answer within 2s"), "{line}");
}
