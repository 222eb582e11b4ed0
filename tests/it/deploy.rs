//! The files under `deploy/`: the Grafana dashboard (its model and that
//! every query parses), how the Kubernetes resources fit together (what no
//! schema can say: the ServiceMonitor scrapes the Service's port, the
//! PrometheusRule carries the shipped rules), and the end-to-end proof: a real
//! Prometheus scrapes a running sidecar, the shipped rules fire `AgentStale`,
//! and every dashboard query returns data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use fred::prelude::*;
use serde_json::Value;

use crate::harness::{
    free_port, poll_until, shared_redis_url, spawn_child, stop_child, tail_of_log, unique_prefix,
};
use crate::receiver::Receiver;
use crate::support::{redis_client, spawn_app};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/agent-supervisor.json"))
        .unwrap_or_else(|e| panic!("dashboard JSON: {e}"))
}

/// Non-row panels, including those nested in collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// `(panel title, query)` for every panel target.
fn panel_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        let title = p["title"].as_str().expect("title").to_string();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
    out
}

/// A query as Grafana sends it with "All" selected for every variable.
fn expand(expr: &str) -> String {
    let mut q = expr.to_string();
    for (var, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "1h"),
        ("agent", ".*"),
        ("source", ".*"),
    ] {
        q = q
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    assert!(!q.contains('$'), "unexpanded variable in {expr}");
    q
}

#[test]
fn dashboard_has_a_stable_uid_and_datasource_agent_source_variables() {
    let d = dashboard();
    assert_eq!(d["uid"], "agent-supervisor");
    assert!(
        d.get("__inputs").is_none(),
        "no __inputs: import and provisioning both work"
    );
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["agent", "source"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
        // label_values(<selector>, label): the selector is PromQL.
        let def = v["definition"].as_str().expect("definition");
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(&format!(", {name})")))
            .unwrap_or_else(|| panic!("{name}: {def}"));
        promql_parser::parser::parse(inner).unwrap_or_else(|e| panic!("{name}: {inner}: {e}"));
    }
    // Every panel and query goes through the datasource variable.
    let mut ids = std::collections::BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("title");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "duplicate id");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let titles: Vec<&str> = panels(&d)
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Agents by state",
        "Non-healthy agents",
        "Heartbeat age",
        "Source up",
        "Scan duration",
        "State transitions",
        "Notification delivery",
        "Undelivered notifications",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let d = dashboard();
    let queries = panel_queries(&d);
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in queries {
        let q = expand(&expr);
        promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("panel {title:?}: {q}: {e}"));
        assert!(
            q.contains("agent_supervisor_"),
            "panel {title:?} reads no agent-supervisor metric: {q}"
        );
    }
}

#[test]
fn grafana_configmap_embeds_the_dashboard_for_the_sidecar() {
    let cm = yaml("deploy/grafana/configmap.yaml");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(
        cm["data"]["agent-supervisor.json"]
            .as_str()
            .expect("data.agent-supervisor.json"),
    )
    .expect("embedded JSON");
    assert_eq!(
        embedded,
        dashboard(),
        "deploy/grafana/configmap.yaml is out of date: regenerate it from agent-supervisor.json"
    );
    let prov = yaml("deploy/grafana/provisioning/dashboards/agent-supervisor.yaml");
    assert_eq!(prov["apiVersion"], 1);
    assert_eq!(prov["providers"][0]["type"], "file");
}

// ---------------------------------------------------------------------------
// Kubernetes resources. .ci/run validates each against its schema (the core
// resources with kubernetes-validate, ServiceMonitor and PrometheusRule
// against the Prometheus Operator's CRD schemas in
// deploy/kubernetes/crd-check); these tests check how they fit together.
// ---------------------------------------------------------------------------

fn base(file: &str) -> Value {
    yaml(&format!("deploy/kubernetes/base/{file}"))
}

fn sidecar(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "agent-supervisor"))
        .expect("initContainers entry agent-supervisor")
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn kustomization_lists_every_manifest_of_the_base() {
    let k = base("kustomization.yaml");
    let listed: std::collections::BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource").to_string())
        .collect();
    let on_disk: std::collections::BTreeSet<String> =
        std::fs::read_dir(repo("deploy/kubernetes/base"))
            .expect("base dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .filter(|n| n != "kustomization.yaml" && !n.ends_with(".example.yaml"))
            .collect();
    assert_eq!(listed, on_disk);
}

#[test]
fn prometheus_rule_wraps_exactly_the_shipped_rules() {
    let pr = base("prometheusrule.yaml");
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(pr["metadata"]["name"], "agent-supervisor");
    let groups = pr["spec"]["groups"].as_array().expect("spec.groups");
    for g in groups {
        assert!(g["name"].is_string(), "{g}");
        for r in g["rules"].as_array().expect("rules") {
            assert!(r["alert"].is_string() && r["expr"].is_string(), "{r}");
            promql_parser::parser::parse(r["expr"].as_str().expect("expr"))
                .unwrap_or_else(|e| panic!("{r}: {e}"));
        }
    }
    assert_eq!(
        pr["spec"]["groups"],
        yaml("deploy/prometheus/rules.yml")["groups"],
        "prometheusrule.yaml differs from deploy/prometheus/rules.yml"
    );
}

#[test]
fn service_monitor_scrapes_the_sidecar_metrics_port_as_job_agent_supervisor() {
    let sm = base("servicemonitor.yaml");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let svc = base("service.yaml");
    // The job label is the Service's name; the rules select job="agent-supervisor".
    assert_eq!(svc["metadata"]["name"], "agent-supervisor");
    assert!(sm["spec"].get("jobLabel").is_none());
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels")
    {
        assert_eq!(&svc["metadata"]["labels"][k], v, "Service label {k}");
    }
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["path"], "/metrics");
    let port = svc["spec"]["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == ep["port"]))
        .unwrap_or_else(|| panic!("Service has no port {}", ep["port"]));
    assert_eq!(port["port"], 9464);
    // The Service selects the pods and targets the sidecar's named port.
    let dep = base("deployment.yaml");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&dep["spec"]["template"]["metadata"]["labels"][k], v);
    }
    let ports = sidecar(&dep)["ports"].as_array().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == port["targetPort"] && p["containerPort"] == 9464),
        "{ports:?}"
    );
}

#[test]
fn deployment_runs_a_hardened_native_sidecar_probed_on_readyz_and_healthz() {
    let dep = base("deployment.yaml");
    let pod = &dep["spec"]["template"]["spec"];
    let c = sidecar(&dep);
    assert_eq!(c["restartPolicy"], "Always", "native sidecar");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The state dir is a writable emptyDir, the config the ConfigMap.
    let mount = |path: &str| {
        let m = c["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["mountPath"] == path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == m["name"]))
            .unwrap_or_else(|| panic!("no volume {}", m["name"]))
            .clone()
    };
    assert_eq!(
        env(c, "AGENT_SUPERVISOR_STATE_DIR")["value"],
        "/var/lib/agent-supervisor"
    );
    assert!(mount("/var/lib/agent-supervisor")["emptyDir"].is_object());
    assert_eq!(
        env(c, "AGENT_SUPERVISOR_CONFIG")["value"],
        "/etc/agent-supervisor/config.yaml"
    );
    let cm_name = mount("/etc/agent-supervisor")["configMap"]["name"].clone();
    assert_eq!(base("configmap.yaml")["metadata"]["name"], cm_name);
    // Credentials come from the Secret, never inline.
    for (var, optional) in [
        ("REDIS_URL", false),
        ("SUPABASE_DB_URL", true),
        ("AGENT_SUPERVISOR_PUSH_TOKEN", true),
        ("AGENT_SUPERVISOR_API_TOKEN", true),
        ("AGENT_SUPERVISOR_READ_TOKEN", true),
        ("ALERT_WEBHOOK_URL", true),
        ("ALERT_WEBHOOK_SECRET", true),
    ] {
        let r = &env(c, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "agent-supervisor-secrets", "{var}");
        assert_eq!(r["optional"].as_bool().unwrap_or(false), optional, "{var}");
    }
    // The overlay for older clusters moves exactly that container.
    let k = yaml("deploy/kubernetes/overlays/plain-sidecar/kustomization.yaml");
    assert_eq!(k["resources"][0], "../../base");
    let ops: Value = yaml("deploy/kubernetes/overlays/plain-sidecar/plain-sidecar.yaml");
    assert_eq!(ops[0]["op"], "move");
    assert_eq!(ops[0]["from"], "/spec/template/spec/initContainers/0");
}

/// Secure as shipped: what changes state listens on the pod's loopback
/// only, the app pushes there, and the NetworkPolicy lets only the
/// monitoring namespace reach the metrics port (the app's port stays open).
#[test]
fn shipped_manifests_keep_writes_inside_the_pod_and_metrics_to_monitoring() {
    let dep = base("deployment.yaml");
    let c = sidecar(&dep);
    assert_eq!(
        env(c, "AGENT_SUPERVISOR_ADMIN_LISTEN")["value"],
        "127.0.0.1:9465"
    );
    let app = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(app, "AGENT_SUPERVISOR_URL")["value"],
        "http://127.0.0.1:9465"
    );
    // No container port and no Service port names 9465.
    let ports = c["ports"].as_array().expect("ports");
    assert!(
        ports.iter().all(|p| p["containerPort"] != 9465),
        "{ports:?}"
    );
    let svc = base("service.yaml");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .all(|p| p["port"] == 9464),
        "{svc}"
    );
    let np = base("networkpolicy.yaml");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector")
    {
        assert_eq!(&labels[k], v, "the policy selects the pod");
    }
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = np["spec"]["ingress"].as_array().expect("ingress");
    let metrics = rules
        .iter()
        .find(|r| r["ports"][0]["port"] == "metrics")
        .expect("a rule for the metrics port");
    assert_eq!(
        metrics["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["ports"][0]["port"] == "http" && r["from"].is_null()),
        "the app's own port stays reachable"
    );
    // The port names the policy uses are the containers' own.
    assert!(ports.iter().any(|p| p["name"] == "metrics"));
    assert!(
        app["ports"]
            .as_array()
            .expect("app ports")
            .iter()
            .any(|p| p["name"] == "http")
    );
}

/// The overlay for three replicas: the same Deployment with `replicas: 3`,
/// and a config with `ha:` (lease on the agents' Redis, the pod's name as
/// replica id) that the sidecar's parser accepts.
#[test]
fn the_ha_overlay_runs_three_replicas_with_a_lease_on_redis() {
    let k = yaml("deploy/kubernetes/overlays/ha/kustomization.yaml");
    assert_eq!(k["resources"][0], "../../base");
    let ops = yaml("deploy/kubernetes/overlays/ha/replicas.yaml");
    assert_eq!(ops[0]["path"], "/spec/replicas");
    assert_eq!(ops[0]["value"], 3);
    let ops = yaml("deploy/kubernetes/overlays/ha/config.yaml");
    assert_eq!(ops[0]["path"], "/data/config.yaml");
    let text = ops[0]["value"].as_str().expect("config text");
    let lookup = |name: &str| match name {
        "REDIS_URL" => Some("redis://redis:6379/0".to_string()),
        "HOSTNAME" => Some("python-ai-services-5d9c-x2".to_string()),
        _ => None,
    };
    let c = agent_supervisor::config::parse(text, Path::new("overlays/ha"), &lookup)
        .unwrap_or_else(|e| panic!("config.yaml of the ha overlay: {e}"));
    let ha = c.ha.expect("ha:");
    assert_eq!(ha.replica_id, "python-ai-services-5d9c-x2");
    assert_eq!(ha.lease.store.kind(), "redis");
}

#[test]
fn kubernetes_configmap_holds_a_valid_config() {
    let cm = base("configmap.yaml");
    let text = cm["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml");
    let lookup = |name: &str| match name {
        "REDIS_URL" => Some("redis://redis:6379/0".to_string()),
        "SUPABASE_DB_URL" => Some("postgres://u:p@db:5432/postgres".to_string()),
        "AGENT_SUPERVISOR_STATE_DIR" => Some("/var/lib/agent-supervisor".to_string()),
        _ => None,
    };
    agent_supervisor::config::parse(text, Path::new("configmap.yaml"), &lookup)
        .unwrap_or_else(|e| panic!("config.yaml in the ConfigMap: {e}"));
}

#[test]
fn dockerfile_matches_the_documented_paths_and_user() {
    let d = read("Dockerfile");
    for want in [
        "FROM rust:${RUST_VERSION}-slim-bookworm AS builder",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "COPY config.yaml /etc/agent-supervisor/config.yaml",
        "AGENT_SUPERVISOR_CONFIG=/etc/agent-supervisor/config.yaml",
        "AGENT_SUPERVISOR_STATE_DIR=/var/lib/agent-supervisor",
        "USER 65532:65532",
        "EXPOSE 9464",
        "ENTRYPOINT [\"/usr/local/bin/agent-supervisor\"]",
        // What the build reads outside src/: the build script and the
        // schema the binary prints (include_str!).
        "COPY Cargo.toml Cargo.lock build.rs ./",
        "COPY config.schema.json ./",
    ] {
        assert!(d.contains(want), "Dockerfile lacks {want:?}");
    }
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A private `prometheus` server; killed on drop.
struct Prometheus {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second as job `agent-supervisor`
    /// and evaluates `rules` every second.
    async fn start(targets: &[&str], rules: &str) -> Prometheus {
        let target = targets.join("\", \"");
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "prometheus not found in /usr/bin or /usr/local/bin: install the Debian \
                     package `prometheus` (.ci/run does)"
                )
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("write rules");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [rules.yml]\n\
                 scrape_configs:\n\
                 \x20 - job_name: agent-supervisor\n\
                 \x20   static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .expect("write config");
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path());
        let child = spawn_child(cmd, &log, "prometheus").expect("prometheus starts");
        let p = Prometheus {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let ready = format!("{}/-/ready", p.base);
        let ready_in_time = poll_until(Duration::from_secs(30), PROMETHEUS_POLL, || async {
            client
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready_in_time,
            "prometheus not ready within 30 s; log:\n{}",
            tail_of_log(&p.log)
        );
        p
    }

    async fn api(&self, client: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let r = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e}"));
        let v: Value = r.json().await.expect("prometheus JSON");
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// deploy/prometheus/rules.yml with every `for:` hold set to 0s: the rules'
/// expressions and labels are the shipped ones, but the test does not wait
/// out minutes of `for` (promtool's unit tests cover the holds).
fn rules_without_holds() -> String {
    let text = read("deploy/prometheus/rules.yml");
    let mut out = String::new();
    let mut holds = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(indent);
            out.push_str("for: 0s\n");
            holds += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(holds >= 5, "expected a `for:` per rule, found {holds}");
    out
}

/// Between two checks of Prometheus (each may be a round of queries).
const PROMETHEUS_POLL: Duration = Duration::from_millis(250);

/// A real Prometheus scrapes the sidecar with the shipped rules: `AgentStale`
/// fires for an agent that stopped, and each dashboard query returns data.
#[tokio::test]
async fn prometheus_fires_agent_stale_and_every_dashboard_query_returns_data() {
    // A Redis source (so scans, scan durations and source series exist) and
    // the push source (an agent that beats once, then stops).
    let url = shared_redis_url();
    let prefix = unique_prefix("deploy");
    let redis = redis_client(&url).await;
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    redis
        .set::<(), _, _>(
            format!("{prefix}redis_worker:last_seen"),
            format!("{now:.6}"),
            None,
            None,
            false,
        )
        .await
        .expect("SET");
    // A webhook receiver, so the notification panels have data.
    let hook = Receiver::start().await;
    let app = spawn_app(&format!(
        r#"
startup_grace: 1s
receivers: [{{name: hook, type: webhook, url: "{hook_url}"}}]
# Never called: its zero series feed the remediation panels.
actions: [{{name: agent_status, method: GET, url: "{hook_url}status/{{agent}}"}}]
routing: {{group_wait: 0s, group_interval: 1s, receivers: [hook]}}
sources:
  - {{name: redis, type: redis, url: "{url}", interval: 500ms, timeout: 1s,
      layout: keys, pattern: "{prefix}{{agent}}:last_seen"}}
  - {{name: push, type: push}}
agents:
  - {{match: "fast_*", stale_after: 1s, labels: {{team: trading, severity: critical}}}}
"#,
        hook_url = hook.url("/")
    ))
    .await;
    // A second sidecar, with ha: (a lease on the same Redis) and no push
    // source, so the leader panel and the ha rules have data too.
    let replica = spawn_app(&format!(
        r#"
sources:
  - {{name: redis, type: redis, url: "{url}", interval: 500ms, timeout: 1s,
      layout: keys, pattern: "{prefix}{{agent}}:last_seen"}}
ha: {{lease: {{store: redis, source: redis, key: "{prefix}lease", ttl: 3s, renew_every: 1s}}}}
"#
    ))
    .await;
    let target = app.base.trim_start_matches("http://").to_string();
    let replica_target = replica.base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&[&target, &replica_target], &rules_without_holds()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    app.push("fast_stopped", None, None).await;
    app.wait_for_state("redis_worker", "healthy", Duration::from_secs(10))
        .await;
    app.wait_for_state("fast_stopped", "stale", Duration::from_secs(10))
        .await;
    hook.wait_requests(1, Duration::from_secs(10)).await;

    // The shipped AgentStale rule fires for that agent (and only for it),
    // and, once the sidecar has been scraped, none of the rules about the
    // sources or the sidecar itself fire. (With `for: 0s`,
    // AgentSupervisorAbsent fires until the first scrape: poll until it has
    // resolved rather than racing it.)
    const QUIET: [&str; 8] = [
        "SourceDown",
        "AgentSupervisorDown",
        "AgentSupervisorAbsent",
        "AgentSupervisorNotificationsStuck",
        "AgentSupervisorNotificationsDropped",
        "AgentSupervisorNoLeader",
        "AgentSupervisorHALeaseLost",
        "AgentSupervisorTwoLeaders",
    ];
    let firing_names = |v: &Value| -> Vec<String> {
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
            .collect()
    };
    let last = std::sync::Mutex::new(Value::Null);
    let fired = poll_until(Duration::from_secs(30), PROMETHEUS_POLL, || async {
        let v = prom.api(&client, "/api/v1/alerts", &[]).await;
        let hit = v["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "AgentStale"
                    && a["labels"]["agent"] == "fast_stopped"
                    && a["state"] == "firing"
            })
        });
        let quiet = !firing_names(&v).iter().any(|n| QUIET.contains(&n.as_str()));
        *last.lock().expect("lock") = v;
        hit && quiet
    })
    .await;
    assert!(
        fired,
        "AgentStale did not fire for fast_stopped, or {QUIET:?} kept firing; last \
         /api/v1/alerts: {}\nprometheus log:\n{}",
        last.lock().expect("lock"),
        tail_of_log(&prom.log)
    );
    let alerts = last.into_inner().expect("lock");
    let stale: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["labels"]["alertname"] == "AgentStale")
        .collect();
    assert_eq!(stale.len(), 1, "only fast_stopped is stale: {stale:?}");
    assert_eq!(stale[0]["labels"]["severity"], "critical");
    assert_eq!(stale[0]["labels"]["job"], "agent-supervisor");
    assert!(
        stale[0]["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("fast_stopped")),
        "{}",
        stale[0]
    );

    // Every dashboard query, as Grafana sends it with "All" selected,
    // returns at least one series (rate()s need two scrapes: poll).
    let queries: Vec<(String, String)> = panel_queries(&dashboard())
        .into_iter()
        .map(|(title, expr)| (title, expand(&expr)))
        .collect();
    let empty = std::sync::Mutex::new(Vec::<String>::new());
    let all_answered = poll_until(Duration::from_secs(30), PROMETHEUS_POLL, || async {
        let mut missing = Vec::new();
        for (title, q) in &queries {
            let v = prom.api(&client, "/api/v1/query", &[("query", q)]).await;
            if v["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                missing.push(format!("{title}: {q}"));
            }
        }
        let done = missing.is_empty();
        *empty.lock().expect("lock") = missing;
        done
    })
    .await;
    assert!(
        all_answered,
        "dashboard queries without data:\n  {}",
        empty.lock().expect("lock").join("\n  ")
    );
    drop(prom);
    app.shutdown().await;
}
