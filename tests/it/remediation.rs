//! Remediation, end to end: the real sidecar binary watches a real FastAPI
//! service (`tests/it/fastapi/app.py` under uvicorn, its agents asyncio
//! tasks beating into a real Redis), calls its admin endpoints
//! (`POST /admin/agents/{id}/restart`, `GET /admin/agents/{id}/status`) and
//! pages a real webhook receiver. The service records every admin call it
//! gets, so each test counts exactly what was called, when, and with what.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    AdminCall, PythonService, RedisServer, RestartMode, ServiceSetup, holds_for, poll_until,
    tail_of_log, unique_prefix,
};
use crate::receiver::Receiver;
use crate::sidecar::{Launch, Sidecar};

const SERVICE: &str = "python-ai-services";
/// Bound on every wait for the sidecar or the service to do something.
const SEE: Duration = Duration::from_secs(30);
const ADMIN_TOKEN: &str = "service-admin-token";
const API_TOKEN: &str = "ops-token";
/// The rule's `verify_within` and `backoff`.
const VERIFY: Duration = Duration::from_secs(3);
const BACKOFF: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Options {
    agents: usize,
    dry_run: bool,
    max_agents: usize,
    group_wait: Duration,
    /// The rule's `page`.
    page: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agents: 3,
            dry_run: false,
            max_agents: 5,
            group_wait: Duration::from_secs(1),
            page: "after_remediation",
        }
    }
}

fn agent_id(i: usize) -> String {
    format!("worker_{i}")
}

fn config(o: &Options, port: u16, redis: &str, prefix: &str, hook: &str) -> String {
    format!(
        r#"startup_grace: 1s
api_token: {API_TOKEN}
recheck: {{every: 500ms, max_per_second: 1000}}
sources:
  - name: {SERVICE}
    type: http
    url: http://127.0.0.1:{port}/health
    interval: 1s
    timeout: 1s
    for: 2s
  - name: redis
    type: redis
    url: {redis}
    interval: 1s
    timeout: 1s
    layout: keys
    pattern: "{prefix}agent:{{agent}}:last_seen"
    depends_on: {SERVICE}
actions:
  - name: restart_agent
    url: "http://127.0.0.1:{port}/admin/agents/{{agent}}/restart"
    headers: {{Authorization: "Bearer {ADMIN_TOKEN}"}}
    body: '{{"agent": {{{{ agent|tojson }}}}, "attempt": {{{{ attempt }}}}, "team": {{{{ labels.team|tojson }}}}}}'
    timeout: 1s
  - name: agent_status
    method: GET
    url: "http://127.0.0.1:{port}/admin/agents/{{agent}}/status"
    headers: {{Authorization: "Bearer {ADMIN_TOKEN}"}}
    timeout: 1s
remediation: {{dry_run: {dry}, max_per_minute: 30, max_agents: {max_agents}}}
agents:
  - match: "worker_*"
    stale_after: 2s
    labels: {{team: trading}}
    remediate:
      action: restart_agent
      after: 1s
      max_attempts: 2
      backoff: {backoff}ms
      verify_within: {verify}ms
      page: {page}
      report: agent_status
receivers:
  - {{name: hook, type: webhook, url: "{hook}"}}
routing: {{group_wait: {group_wait}ms, group_interval: 2s, repeat_interval: 1h, send_resolved: true, receivers: [hook]}}
"#,
        dry = o.dry_run,
        max_agents = o.max_agents,
        backoff = BACKOFF.as_millis(),
        verify = VERIFY.as_millis(),
        group_wait = o.group_wait.as_millis(),
        page = o.page,
    )
}

struct Stack {
    _redis: RedisServer,
    service: PythonService,
    sidecar: Sidecar,
    hook: Receiver,
    agents: Vec<String>,
    /// The sidecar's config, log and state (`state/`): a restart in it
    /// finds the previous run's state.
    dir: tempfile::TempDir,
    config: String,
}

impl Stack {
    async fn start(opts: Options) -> Stack {
        let redis = RedisServer::start();
        let hook = Receiver::start().await;
        let agents: Vec<String> = (0..opts.agents).map(agent_id).collect();
        let setup = ServiceSetup {
            agents: agents.clone(),
            redis_url: redis.url.clone(),
            prefix: unique_prefix("remedy"),
            beat_every: 0.5,
            startup_delay: 0.0,
        };
        let prefix = setup.prefix.clone();
        let service = PythonService::start(setup).await;
        let cfg = config(&opts, service.port, &redis.url, &prefix, &hook.url("/hook"));
        let dir = tempfile::tempdir().expect("tempdir");
        let sidecar = Sidecar::start_in(dir.path(), "sidecar", &cfg, Launch::default()).await;
        let stack = Stack {
            _redis: redis,
            service,
            sidecar,
            hook,
            agents,
            dir,
            config: cfg,
        };
        stack.wait_all_healthy().await;
        stack
    }

    /// SIGKILL the sidecar (no shutdown, nothing saved on the way out) and
    /// start it again in the same directory.
    async fn kill_and_restart(&mut self) {
        let pid = libc::pid_t::try_from(self.sidecar.pid()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let dead = poll_until(SEE, Duration::from_millis(10), || {
            std::future::ready(!self.sidecar.running())
        })
        .await;
        assert!(dead, "the sidecar survived SIGKILL");
        self.sidecar =
            Sidecar::start_in(self.dir.path(), "sidecar", &self.config, Launch::default()).await;
    }

    fn logs(&self) -> String {
        format!(
            "sidecar log:\n{}\nservice log:\n{}",
            self.sidecar.log_tail(),
            tail_of_log(self.service.log_path())
        )
    }

    async fn wait_all_healthy(&self) {
        let mut ids = self.agents.clone();
        ids.push(SERVICE.to_string());
        let ok = poll_until(SEE, Duration::from_millis(50), || async {
            let agents = self.sidecar.agents().await;
            ids.iter()
                .all(|id| agents.get(id).is_some_and(|a| a["state"] == "healthy"))
        })
        .await;
        assert!(ok, "not every agent turned healthy\n{}", self.logs());
    }

    /// `GET /api/v1/actions`.
    async fn actions(&self) -> Value {
        serde_json::from_str(&self.sidecar.get("/api/v1/actions").await).expect("actions JSON")
    }

    /// The finished attempts of `agent`'s `action`, oldest first.
    async fn attempts(&self, agent: &str, action: &str) -> Vec<Value> {
        let v = self.actions().await;
        let mut list: Vec<Value> = v["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter(|a| a["agent"] == agent && a["action"] == action)
            .cloned()
            .collect();
        list.reverse();
        list
    }

    /// Admin calls the service got for `agent` at `path_end` (`restart`).
    async fn calls(&self, agent: &str, path_end: &str) -> Vec<AdminCall> {
        self.service
            .calls()
            .await
            .into_iter()
            .filter(|c| c.agent == agent && c.path.ends_with(path_end))
            .collect()
    }

    async fn wait_notifications(&self, n: usize) -> Vec<Value> {
        let ok = poll_until(SEE, Duration::from_millis(25), || {
            std::future::ready(self.hook.requests().len() >= n)
        })
        .await;
        assert!(
            ok,
            "expected {n} notification(s), got {:#?}\n{}",
            self.notifications(),
            self.logs()
        );
        self.notifications()
    }

    fn notifications(&self) -> Vec<Value> {
        self.hook.requests().iter().map(|r| r.json()).collect()
    }

    /// For `period`: exactly `n` notifications and `restarts` restart calls
    /// in all.
    async fn hold_quiet(&self, n: usize, restarts: usize, period: Duration) {
        holds_for(
            &format!("{n} notification(s) and {restarts} restart(s)"),
            period,
            || async move {
                let got = self.notifications();
                let calls: Vec<AdminCall> = self
                    .service
                    .calls()
                    .await
                    .into_iter()
                    .filter(|c| c.path.ends_with("/restart"))
                    .collect();
                assert!(
                    got.len() == n && calls.len() == restarts,
                    "expected {n} notification(s) and {restarts} restart(s), got {got:#?} and \
                     {calls:#?}\n{}",
                    self.logs()
                );
                true
            },
        )
        .await;
    }

    /// Waits until an automatic restart of `agent` is recorded as
    /// `recovered`.
    async fn wait_recovered(&self, agent: &str, when: &str) {
        let ok = poll_until(SEE, Duration::from_millis(50), || async {
            self.attempts(agent, "restart_agent")
                .await
                .iter()
                .any(|a| a["outcome"] == "recovered")
        })
        .await;
        assert!(ok, "{agent} not recovered {when}\n{}", self.logs());
    }

    /// For `period`: the service gets no admin call at all.
    async fn hold_no_call(&self, what: &str, period: Duration) {
        holds_for(what, period, || async {
            let calls = self.service.calls().await;
            assert!(calls.is_empty(), "{what}: {calls:#?}\n{}", self.logs());
            true
        })
        .await;
    }

    /// POST a manual action on the admin listener, with `token`.
    async fn run_action(
        &self,
        base: &str,
        agent: &str,
        action: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client.post(format!("{base}/api/v1/agents/{agent}/actions/{action}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST action");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_agent_is_restarted_and_recovers_without_a_page() {
    let s = Stack::start(Options::default()).await;
    let stuck = agent_id(0);
    s.service.stick(&stuck).await;
    // Restarted once, then healthy again: the attempt says recovered.
    s.wait_recovered(&stuck, "after a restart").await;
    // It really was stale (the page was held, not never needed).
    assert!(s.sidecar.transitions_to("stale").await >= 1.0);
    let restarts = s.calls(&stuck, "/restart").await;
    assert_eq!(restarts.len(), 1, "{restarts:#?}");
    let call = &restarts[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {ADMIN_TOKEN}").as_str())
    );
    let body: Value = serde_json::from_str(&call.body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"agent": stuck, "attempt": 1, "team": "trading"})
    );
    // No page, then or later; no other agent touched.
    s.hold_quiet(0, 1, Duration::from_secs(4)).await;
    let a = s.sidecar.agent(&stuck).await.expect("known");
    assert_eq!(a["state"], "healthy", "{a}");
    // One attempt recorded, counted once as a success.
    let recorded = s.attempts(&stuck, "restart_agent").await;
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(recorded[0]["trigger"], "auto");
    assert_eq!(recorded[0]["status"], 200);
    let successes = s
        .sidecar
        .metric_sum(
            "agent_supervisor_actions_total",
            &["action=\"restart_agent\"", "result=\"success\""],
        )
        .await;
    assert_eq!(successes, 1.0);

    // By hand: only on the admin listener, only with the API token.
    let other = agent_id(1);
    let (code, _) = s
        .run_action(&s.sidecar.base, &other, "agent_status", Some(API_TOKEN))
        .await;
    assert_eq!(code, 403, "the read listener takes no action");
    let (code, _) = s
        .run_action(&s.sidecar.admin, &other, "agent_status", None)
        .await;
    assert_eq!(code, 401);
    let (code, _) = s
        .run_action(&s.sidecar.admin, &other, "agent_status", Some("wrong"))
        .await;
    assert_eq!(code, 401);
    let (code, v) = s
        .run_action(&s.sidecar.admin, "nobody", "agent_status", Some(API_TOKEN))
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = s
        .run_action(&s.sidecar.admin, &other, "no_such_action", Some(API_TOKEN))
        .await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(s.calls(&other, "/status").await.len(), 0);
    let (code, v) = s
        .run_action(&s.sidecar.admin, &other, "agent_status", Some(API_TOKEN))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["attempt"]["trigger"], "manual");
    assert_eq!(v["attempt"]["outcome"], "succeeded");
    assert_eq!(v["attempt"]["status"], 200);
    assert!(v["answer"].as_str().unwrap().contains(&other), "{v}");
    assert_eq!(s.calls(&other, "/status").await.len(), 1);
    let listed = s.attempts(&other, "agent_status").await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    // A large answer is kept to 4 KiB, marked where cut.
    s.service.set_report_size(&other, 20_000).await;
    let (code, v) = s
        .run_action(&s.sidecar.admin, &other, "agent_status", Some(API_TOKEN))
        .await;
    assert_eq!(code, 200, "{v}");
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.len() <= 4096, "{} bytes", answer.len());
    assert!(answer.ends_with('…') && answer.contains(&other), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_does_not_help_is_tried_max_attempts_times_then_pages_once_with_the_report()
{
    let s = Stack::start(Options::default()).await;
    let stuck = agent_id(0);
    s.service.set_restart_mode(&stuck, RestartMode::Noop).await;
    s.service.stick(&stuck).await;
    let got = s.wait_notifications(1).await;
    let restarts = s.calls(&stuck, "/restart").await;
    assert_eq!(
        restarts.len(),
        2,
        "exactly max_attempts calls: {restarts:#?}"
    );
    // The second waited for the first's verification and the backoff.
    let gap = restarts[1].at - restarts[0].at;
    let least = (VERIFY + BACKOFF).as_secs_f64() - 0.1;
    assert!(
        gap >= least,
        "attempts {gap:.2}s apart, expected ≥ {least}s"
    );
    // The report was read after the last attempt, before the page.
    let status = s.calls(&stuck, "/status").await;
    assert_eq!(status.len(), 1, "{status:#?}");
    assert!(status[0].at > restarts[1].at);
    // One page, about that agent, carrying what was tried and the report.
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = &got[0];
    assert_eq!(n["status"], "firing");
    let alerts = n["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{n}");
    let a = &alerts[0];
    assert_eq!(a["agent"], stuck.as_str());
    assert_eq!(a["kind"], "agent_stale");
    let summary = a["summary"].as_str().unwrap();
    assert!(
        summary.contains("remediation failed: 2 × restart_agent"),
        "{summary}"
    );
    let r = &a["remediation"];
    assert_eq!(r["attempts"].as_array().map(Vec::len), Some(2), "{r}");
    assert!(
        r["attempts"][0]
            .as_str()
            .unwrap()
            .contains("restart_agent #1: not_recovered"),
        "{r}"
    );
    let report = r["report"].as_str().expect("report");
    assert!(report.contains("\"stuck\": true"), "{report}");
    // The API shows the same report for the agent.
    let v: Value =
        serde_json::from_str(&s.sidecar.get(&format!("/api/v1/agents/{stuck}")).await).unwrap();
    assert!(
        v["report"]["body"]
            .as_str()
            .unwrap()
            .contains("\"stuck\": true"),
        "{v}"
    );
    assert_eq!(v["remediation"]["phase"], "done", "{v}");
    // Nothing more: no third call, no second page.
    s.hold_quiet(1, 2, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_endpoint_that_fails_or_hangs_is_a_failed_attempt_without_a_retry_storm() {
    let s = Stack::start(Options::default()).await;
    let (failing, hanging) = (agent_id(0), agent_id(1));
    s.service
        .set_restart_mode(&failing, RestartMode::Error)
        .await;
    s.service
        .set_restart_mode(&hanging, RestartMode::Hang)
        .await;
    s.service.stick(&failing).await;
    s.service.stick(&hanging).await;
    for agent in [&failing, &hanging] {
        let ok = poll_until(SEE, Duration::from_millis(50), || async {
            let a = s.attempts(agent, "restart_agent").await;
            a.len() == 2 && a.iter().all(|x| x["outcome"] == "failed")
        })
        .await;
        assert!(ok, "{agent}: no two failed attempts\n{}", s.logs());
    }
    let failed = s.attempts(&failing, "restart_agent").await;
    assert_eq!(failed[0]["status"], 500);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("answer 500: {\"detail\":\"restart failed"),
        "{failed:#?}"
    );
    let hung = s.attempts(&hanging, "restart_agent").await;
    assert_eq!(hung[0]["error"], "timed out after 1s", "{hung:#?}");
    assert!(hung[0]["duration_ms"].as_u64().unwrap() < 1500, "{hung:#?}");
    // Both pages went out, and nothing is called again.
    let ok = poll_until(SEE, Duration::from_millis(50), || async {
        let paged: Vec<String> = s
            .notifications()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["agent"].as_str().map(str::to_string))
            .collect();
        paged.contains(&failing) && paged.contains(&hanging)
    })
    .await;
    assert!(
        ok,
        "both agents paged: {:#?}\n{}",
        s.notifications(),
        s.logs()
    );
    let pages = s.notifications().len();
    s.hold_quiet(pages, 4, Duration::from_secs(4)).await;
    assert_eq!(s.calls(&failing, "/restart").await.len(), 2);
    assert_eq!(s.calls(&hanging, "/restart").await.len(), 2);
    let count = |result: &'static str| {
        let s = &s;
        async move {
            s.sidecar
                .metric_sum(
                    "agent_supervisor_actions_total",
                    &["action=\"restart_agent\"", &format!("result=\"{result}\"")],
                )
                .await
        }
    };
    assert_eq!(count("failure").await, 2.0);
    assert_eq!(count("timeout").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stuck_agents_trip_the_circuit_breaker_and_page_once() {
    let s = Stack::start(Options {
        agents: 50,
        group_wait: Duration::from_secs(3),
        ..Options::default()
    })
    .await;
    let sticks = s.agents.iter().map(|a| s.service.stick(a));
    futures::future::join_all(sticks).await;
    let got = s.wait_notifications(1).await;
    let firing: Vec<&Value> = got[0]["alerts"].as_array().unwrap().iter().collect();
    assert_eq!(firing.len(), 50, "one page for all 50: {:#?}", got[0]);
    // Each says why nothing was tried (the count is the one seen when it
    // was halted: the agents go stale within a few hundred milliseconds).
    for a in &firing {
        let summary = a["summary"].as_str().unwrap();
        assert!(
            summary.contains("agents need an action at once (more than remediation.max_agents, 5)"),
            "{a:#?}"
        );
    }
    let v = s.actions().await;
    assert_eq!(v["breaker_open"], true, "{v}");
    assert_eq!(v["attempts"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(
        s.sidecar
            .metric_sum("agent_supervisor_remediation_breaker_open", &[])
            .await,
        1.0
    );
    // Nothing is called, and no second page.
    s.hold_quiet(1, 0, Duration::from_secs(4)).await;
    assert!(s.service.calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_action_while_the_service_check_fails_and_it_is_acted_on_once_the_service_is_back() {
    let s = Stack::start(Options::default()).await;
    let stuck = agent_id(0);
    s.service.set_health_http_status(500).await;
    let ok = poll_until(SEE, Duration::from_millis(50), || async {
        s.sidecar
            .agent(SERVICE)
            .await
            .is_some_and(|a| a["state"] == "failing")
    })
    .await;
    assert!(ok, "the service check never failed\n{}", s.logs());
    s.service.stick(&stuck).await;
    // Well past stale_after + after: held unknown, nothing called.
    s.hold_no_call(
        "no admin call while the service fails",
        Duration::from_secs(5),
    )
    .await;
    let a = s.sidecar.agent(&stuck).await.expect("known");
    assert_eq!(a["state"], "unknown", "{a}");
    // The service is back: the agent gets stale_after to beat, is stale,
    // and only then restarted.
    s.service.set_health_http_status(200).await;
    let ok = poll_until(SEE, Duration::from_millis(50), || async {
        !s.calls(&stuck, "/restart").await.is_empty()
    })
    .await;
    assert!(
        ok,
        "never restarted once the service was back\n{}",
        s.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_calls_nothing_records_what_it_would_do_and_pages() {
    let s = Stack::start(Options {
        dry_run: true,
        ..Options::default()
    })
    .await;
    let stuck = agent_id(0);
    s.service.stick(&stuck).await;
    // Nothing waits for a dry run: the page goes out as without
    // remediation, and the alert notes what would have been called.
    let got = s.wait_notifications(1).await;
    assert_eq!(got[0]["alerts"][0]["agent"], stuck.as_str());
    let ok = poll_until(SEE, Duration::from_millis(50), || async {
        let v: Value = serde_json::from_str(&s.sidecar.get("/api/v1/alerts").await).unwrap();
        v["alerts"].as_array().unwrap().iter().any(|a| {
            a["agent"] == stuck.as_str()
                && a["remediation"]["summary"] == "dry run: restart_agent would have been called"
        })
    })
    .await;
    assert!(ok, "no dry-run note on the alert\n{}", s.logs());
    let recorded = s.attempts(&stuck, "restart_agent").await;
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(recorded[0]["outcome"], "dry_run");
    let dry = s
        .sidecar
        .metric_sum("agent_supervisor_actions_total", &["result=\"dry_run\""])
        .await;
    assert_eq!(dry, 1.0);
    s.hold_quiet(1, 0, Duration::from_secs(3)).await;
    assert!(
        s.service.calls().await.is_empty(),
        "nothing is called in a dry run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_agent_is_not_acted_on_until_its_silence_is_removed() {
    let s = Stack::start(Options::default()).await;
    let stuck = agent_id(0);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/silences", s.sidecar.admin))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({
            "matchers": {"agent": stuck},
            "duration": "1h",
            "comment": "maintenance of worker_0",
        }))
        .send()
        .await
        .expect("POST silence");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.service.stick(&stuck).await;
    let ok = poll_until(SEE, Duration::from_millis(50), || async {
        s.sidecar
            .agent(&stuck)
            .await
            .is_some_and(|a| a["state"] == "stale")
    })
    .await;
    assert!(ok, "never stale\n{}", s.logs());
    // Well past `after`: nothing called, the case says why.
    s.hold_no_call("no restart while silenced", Duration::from_secs(3))
        .await;
    let v = s.actions().await;
    assert_eq!(v["cases"][&stuck]["blocked"]["reason"], "silenced", "{v}");
    let r = client
        .delete(format!("{}/api/v1/silences/{id}", s.sidecar.admin))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("DELETE silence");
    assert!(r.status().is_success());
    s.wait_recovered(&stuck, "once the silence was removed")
        .await;
    assert_eq!(s.calls(&stuck, "/restart").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_sidecar_does_not_call_more_than_max_attempts_after_its_restart() {
    let mut s = Stack::start(Options::default()).await;
    let stuck = agent_id(0);
    s.service.set_restart_mode(&stuck, RestartMode::Noop).await;
    s.service.stick(&stuck).await;
    // The first call is made (its start saved before it is made).
    let saved = s.dir.path().join("state/actions.json");
    let ok = poll_until(SEE, Duration::from_millis(20), || async {
        s.calls(&stuck, "/restart").await.len() == 1
            && std::fs::read_to_string(&saved).is_ok_and(|t| t.contains(&stuck))
    })
    .await;
    assert!(ok, "no first call saved\n{}", s.logs());
    s.kill_and_restart().await;
    // The restarted sidecar makes the one call left in the budget, then
    // pages once.
    let got = s.wait_notifications(1).await;
    assert_eq!(s.calls(&stuck, "/restart").await.len(), 2);
    let summary = got[0]["alerts"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("remediation failed: 2 × restart_agent"),
        "{summary}"
    );
    s.hold_quiet(1, 2, Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_page_at_once_the_alert_fires_and_resolves_saying_what_fixed_it() {
    // Told at once (no group_wait): the restart comes `after` (1 s) later.
    let s = Stack::start(Options {
        page: "at_once",
        group_wait: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let stuck = agent_id(0);
    s.service.stick(&stuck).await;
    // Paged as soon as it is stale, then resolved once the restart worked.
    let got = s.wait_notifications(2).await;
    assert_eq!(got[0]["status"], "firing", "{got:#?}");
    assert_eq!(got[1]["status"], "resolved", "{got:#?}");
    let summary = got[1]["alerts"][0]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("{stuck} recovered at "))
            && summary.ends_with(", after restart_agent"),
        "{summary}"
    );
    assert_eq!(
        got[1]["alerts"][0]["remediation"]["recovered_after"],
        "restart_agent"
    );
    assert_eq!(s.calls(&stuck, "/restart").await.len(), 1);
    s.hold_quiet(2, 1, Duration::from_secs(3)).await;
}
