//! `taskfold bench services`: the services beside the queue under load, over HTTP against a
//! running server, Hawk-signed with `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN`
//! (which must hold `*`):
//!
//! - the index: fills it with `index_entries` entries (1,000 namespaces of 1,000 tasks), then
//!   times `findTask` and `findArtifactFromTask` (its 303, not followed) on random entries;
//! - auth: makes `roles` roles and `clients` clients through the Auth API, then times a
//!   Hawk-signed `task` call as random API-made clients beside the same as the static client;
//! - taskcluster-proxy: a proxy of the worker's, in this process, with the same credentials;
//!   `createTask` through it (plain HTTP) beside a signed one, one at a time.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::Method;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::auth::Credentials;
use crate::client::lifecycle::CallLatencies;
use crate::client::{Error, QueueClient};
use crate::model::{Slugid, Timestamp};
use crate::worker::proxy::Proxy;

pub struct Options {
    pub root_url: String,
    pub credentials: Credentials,
    pub index_entries: u64,
    pub clients: u64,
    pub roles: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// How long each timed phase runs.
    pub seconds: f64,
    /// createTask calls each way in the proxy comparison.
    pub proxy_tasks: usize,
    /// The server's pid, to report its memory.
    pub server_pid: Option<u32>,
    pub progress: bool,
}

/// A timed phase: its calls' latencies and how long it ran.
pub struct Timed {
    pub latencies: CallLatencies,
    pub elapsed: Duration,
    pub failures: u64,
}

impl Timed {
    fn per_second(&self) -> f64 {
        self.latencies.samples.len() as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} {:>8.0}/s  p50 {:>8.2?}  p99 {:>8.2?}  ({} calls, {} failed)",
            self.latencies.method,
            self.per_second(),
            self.latencies.percentile(0.5),
            self.latencies.percentile(0.99),
            self.latencies.samples.len(),
            self.failures
        )
    }
}

pub struct Report {
    pub index_entries: u64,
    pub fill: Duration,
    pub find_task: Timed,
    pub find_artifact: Timed,
    pub api_clients: u64,
    pub roles: u64,
    pub task_as_static_client: Timed,
    pub task_as_api_clients: Timed,
    pub create_task_direct: CallLatencies,
    pub create_task_proxied: CallLatencies,
    /// The server's resident memory after each phase, when its pid was given.
    pub server_rss: Vec<(&'static str, u64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "index: {} entries inserted in {:.1} s ({:.0}/s)",
            self.index_entries,
            self.fill.as_secs_f64(),
            self.index_entries as f64 / self.fill.as_secs_f64().max(1e-9)
        )?;
        writeln!(f, "  {}", self.find_task)?;
        writeln!(f, "  {}", self.find_artifact)?;
        writeln!(
            f,
            "auth: {} API-made clients, {} roles",
            self.api_clients, self.roles
        )?;
        writeln!(f, "  {}", self.task_as_static_client)?;
        writeln!(f, "  {}", self.task_as_api_clients)?;
        let p50 = |latencies: &CallLatencies| latencies.percentile(0.5);
        writeln!(
            f,
            "taskcluster-proxy: createTask p50 {:.2?} direct, {:.2?} through the proxy (+{:.2?})",
            p50(&self.create_task_direct),
            p50(&self.create_task_proxied),
            p50(&self.create_task_proxied).saturating_sub(p50(&self.create_task_direct))
        )?;
        for (phase, bytes) in &self.server_rss {
            writeln!(
                f,
                "server RSS after {phase}: {:.0} MiB",
                *bytes as f64 / 1048576.0
            )?;
        }
        Ok(())
    }
}

/// The path of index entry `i`: 1,000 namespaces of 1,000 tasks.
fn entry_path(i: u64) -> String {
    format!("bench.n{:04}.t{:03}", i / 1000, i % 1000)
}

fn definition(task_queue_id: &str) -> Value {
    let now = Timestamp::now();
    json!({
        "taskQueueId": task_queue_id,
        "created": now,
        "deadline": now.plus_millis(3_600_000),
        "payload": {},
        "metadata": {"name": "bench", "description": "taskfold bench services",
                     "owner": "bench@example.com", "source": "https://example.com/bench"},
    })
}

/// A random number below `bound` (a xorshift of the clock: the benches need spread, not
/// secrecy).
fn random_below(state: &RefCell<u64>, bound: u64) -> u64 {
    let mut x = *state.borrow();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state.borrow_mut() = x;
    x % bound.max(1)
}

/// Calls `call(i)` for `i` in `0..count`, `concurrency` at once; how many failed.
async fn each<F, Fut>(count: u64, concurrency: usize, progress: bool, what: &str, call: F) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let failures = RefCell::new(0u64);
    let done = RefCell::new(0u64);
    futures::stream::iter(0..count)
        .for_each_concurrent(concurrency.max(1), |i| {
            let call = &call;
            let (failures, done) = (&failures, &done);
            async move {
                if let Err(error) = call(i).await {
                    *failures.borrow_mut() += 1;
                    if *failures.borrow() <= 3 {
                        eprintln!("{what} {i}: {error}");
                    }
                }
                *done.borrow_mut() += 1;
                let done = *done.borrow();
                if progress && done % 50_000 == 0 {
                    eprintln!("{what}: {done} of {count}");
                }
            }
        })
        .await;
    failures.into_inner()
}

/// Runs `call` from `concurrency` loops for `seconds`, timing each call.
async fn timed<F, Fut>(method: &'static str, concurrency: usize, seconds: f64, call: F) -> Timed
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let samples = RefCell::new(Vec::new());
    let failures = RefCell::new(0u64);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    futures::future::join_all((0..concurrency.max(1)).map(|_| async {
        while Instant::now() < until {
            let sent = Instant::now();
            match call().await {
                Ok(()) => samples.borrow_mut().push(sent.elapsed()),
                Err(_) => *failures.borrow_mut() += 1,
            }
        }
    }))
    .await;
    Timed {
        latencies: CallLatencies {
            method,
            samples: samples.into_inner(),
        },
        elapsed: started.elapsed(),
        failures: failures.into_inner(),
    }
}

fn json_body(value: &Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", value.to_string().into_bytes()))
}

fn rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub async fn run(options: Options) -> anyhow::Result<Report> {
    let root = options.root_url.trim_end_matches('/').to_owned();
    let connections = options.concurrency.max(1);
    let client = QueueClient::new(&root, Some(options.credentials.clone()), connections)?;
    let redirects = QueueClient::not_following_redirects(
        &root,
        Some(options.credentials.clone()),
        connections,
    )?;
    let random = RefCell::new((Timestamp::now().millis() as u64) | 1);
    let mut server_rss = Vec::new();
    let progress = |text: &str| {
        if options.progress {
            eprintln!("{text}");
        }
    };

    // A completed task with a public artifact, for the index entries to point at.
    let task_queue_id = format!(
        "bench/s{}",
        &Slugid::nice().to_string()[..8]
            .to_lowercase()
            .replace(['-', '_'], "x")
    );
    let task_id = Slugid::nice();
    let _: Value = client
        .create_task(task_id, &definition(&task_queue_id))
        .await?;
    let claimed: Value = client
        .claim_work(
            &task_queue_id,
            &json!({"workerGroup": "bench", "workerId": "bench", "tasks": 1}),
        )
        .await?;
    let run_id = claimed["tasks"][0]["runId"].as_u64().unwrap_or_default();
    let artifact = json!({"storageType": "reference", "contentType": "text/plain",
                          "url": format!("{root}/api/queue/v1/ping"),
                          "expires": Timestamp::now().plus_millis(86_400_000)});
    client
        .create_artifact(&task_id.to_string(), run_id, "public/bench.txt", &artifact)
        .await?;
    let _: Value = client
        .report_completed(&task_id.to_string(), run_id)
        .await?;

    // The index.
    progress(&format!(
        "filling the index with {} entries",
        options.index_entries
    ));
    let expires = Timestamp::now().plus_millis(86_400_000);
    let fill_started = Instant::now();
    let entry = json!({"taskId": task_id, "rank": 0, "data": {}, "expires": expires});
    let failed = each(
        options.index_entries,
        options.concurrency,
        options.progress,
        "insertTask",
        |i| {
            let (client, entry) = (&client, &entry);
            async move {
                let path = format!("/api/index/v1/task/{}", entry_path(i));
                client
                    .send(Method::PUT, &path, json_body(entry))
                    .await
                    .map(|_| ())
            }
        },
    )
    .await;
    let fill = fill_started.elapsed();
    if failed > 0 {
        anyhow::bail!("{failed} insertTask calls failed");
    }
    server_rss.extend(rss(options.server_pid).map(|bytes| ("the index fill", bytes)));
    let entries = options.index_entries.max(1);
    progress("timing findTask");
    let find_task = timed("findTask", options.concurrency, options.seconds, || {
        let path = format!(
            "/api/index/v1/task/{}",
            entry_path(random_below(&random, entries))
        );
        let client = &client;
        async move { client.send(Method::GET, &path, None).await.map(|_| ()) }
    })
    .await;
    progress("timing findArtifactFromTask");
    let find_artifact = timed(
        "findArtifactFromTask (303)",
        options.concurrency,
        options.seconds,
        || {
            let path = format!(
                "/api/index/v1/task/{}/artifacts/public/bench.txt",
                entry_path(random_below(&random, entries))
            );
            let redirects = &redirects;
            async move {
                let answer = redirects.forward(Method::GET, &path, None).await?;
                if answer.status.as_u16() == 303 {
                    Ok(())
                } else {
                    Err(Error::Transport {
                        method: Method::GET,
                        path,
                        reason: format!("answered {}", answer.status),
                    })
                }
            }
        },
    )
    .await;

    // Auth.
    progress(&format!(
        "making {} roles and {} clients",
        options.roles, options.clients
    ));
    let roles = options.roles.max(1);
    let failed = each(roles, options.concurrency, options.progress, "createRole", |j| {
        let client = &client;
        async move {
            let role = json!({"description": "bench", "scopes": [format!("queue:get-task:*"), format!("bench:role-{j}")]});
            client
                .send(Method::PUT, &format!("/api/auth/v1/roles/bench-role-{j}"), json_body(&role))
                .await
                .map(|_| ())
        }
    })
    .await;
    if failed > 0 {
        anyhow::bail!("{failed} createRole calls failed");
    }
    let made: Rc<RefCell<Vec<Credentials>>> = Rc::default();
    let client_expires = Timestamp::now().plus_millis(86_400_000);
    let failed = each(
        options.clients,
        options.concurrency,
        options.progress,
        "createClient",
        |i| {
            let (client, made) = (&client, made.clone());
            async move {
                let client_id = format!("bench/client-{i}");
                let body = json!({"description": "bench", "expires": client_expires,
                              "scopes": [format!("assume:bench-role-{}", i % roles)]});
                let answer = client
                    .send(
                        Method::PUT,
                        &format!("/api/auth/v1/clients/{}", client_id.replace('/', "%2F")),
                        json_body(&body),
                    )
                    .await?;
                made.borrow_mut().push(Credentials {
                    client_id,
                    access_token: answer["accessToken"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    certificate: None,
                });
                Ok(())
            }
        },
    )
    .await;
    if failed > 0 {
        anyhow::bail!("{failed} createClient calls failed");
    }
    server_rss.extend(rss(options.server_pid).map(|bytes| ("making the clients and roles", bytes)));
    let path = format!("/api/queue/v1/task/{task_id}");
    progress("timing task as the static client");
    let task_as_static_client = timed(
        "task (static client)",
        options.concurrency,
        options.seconds,
        || {
            let (client, path) = (&client, &path);
            async move { client.send(Method::GET, path, None).await.map(|_| ()) }
        },
    )
    .await;
    let signers: Vec<QueueClient> = made
        .borrow()
        .iter()
        .map(|credentials| client.with_credentials(credentials.clone()))
        .collect::<Result<_, _>>()?;
    progress("timing task as API-made clients");
    let task_as_api_clients = timed(
        "task (API-made clients)",
        options.concurrency,
        options.seconds,
        || {
            let signer = signers
                .get(random_below(&random, signers.len() as u64) as usize)
                .unwrap_or(&client);
            let path = &path;
            async move { signer.send(Method::GET, path, None).await.map(|_| ()) }
        },
    )
    .await;

    // taskcluster-proxy.
    progress("timing createTask directly and through taskcluster-proxy");
    let (_, credentials) = tokio::sync::watch::channel(options.credentials.clone());
    let proxy = Proxy::start("127.0.0.1", &root, credentials)?;
    let plain = QueueClient::new(&proxy.url, None, 1)?;
    let mut create_task_direct = CallLatencies {
        method: "createTask",
        samples: Vec::new(),
    };
    let mut create_task_proxied = CallLatencies {
        method: "createTask (proxy)",
        samples: Vec::new(),
    };
    for _ in 0..options.proxy_tasks {
        for (through_proxy, latencies) in [
            (false, &mut create_task_direct),
            (true, &mut create_task_proxied),
        ] {
            let body = definition(&task_queue_id);
            let path = format!("/api/queue/v1/task/{}", Slugid::nice());
            let sent = Instant::now();
            let answer = if through_proxy {
                plain.send(Method::PUT, &path, json_body(&body)).await
            } else {
                client.send(Method::PUT, &path, json_body(&body)).await
            };
            answer?;
            latencies.samples.push(sent.elapsed());
        }
    }
    drop(proxy);
    Ok(Report {
        index_entries: options.index_entries,
        fill,
        find_task,
        find_artifact,
        api_clients: options.clients,
        roles,
        task_as_static_client,
        task_as_api_clients,
        create_task_direct,
        create_task_proxied,
        server_rss,
    })
}
