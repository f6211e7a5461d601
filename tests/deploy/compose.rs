//! The compose file, the Grafana provisioning and the Dockerfile, read as data: what
//! they name exists, and they run what the kit promises.

use std::collections::BTreeSet;

use serde_yaml_ng::Value as Yaml;

use crate::kit::dashboard;
use crate::support as d;

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
