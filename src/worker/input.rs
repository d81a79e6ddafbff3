//! The INPUT engine (`--engine input`, Cloudomation's INPUT task): ask a person,
//! `schemas/input-payload.json`. The worker publishes the request on the queue
//! (`PUT …/runs/<runId>/input`, with the run's credentials) and reads it back each second
//! until the queue says it was answered or expired; the queue is the one judge of both, so
//! an answer that the queue took is never lost to a worker's clock. The wait is one "call"
//! of [`calls`]: bounded by the task's deadline and the run's aborts, its outputs published
//! as the other kinds' are.

use std::time::Duration;

use awc::http::Method;
use serde_json::{Map, Value, json};

use super::calls::{self, Ended};
use super::live_log::LiveLog;
use super::payload::InputPayload;
use super::resolution::Outcome;
use super::task_run::{RunContext, SharedClient};

/// How often the worker reads the request back while it waits.
const POLL: Duration = Duration::from_secs(1);
/// The error of a request that nobody answered in time, in the log and the outputs.
pub const EXPIRED: &str = "input request expired";

pub async fn execute(run: &mut RunContext) -> Outcome {
    let payload = match InputPayload::read(&run.definition["payload"]) {
        Ok(payload) => payload,
        Err(invalid) => return run.malformed_payload(&invalid),
    };
    let path = format!("/task/{}/runs/{}/input", run.task_id, run.run_id);
    run.log
        .info(&format!("Input requested: {}", payload.request));
    // The queue resolves the run at its deadline, whatever the request's own timeout.
    let until_deadline = run
        .deadline()
        .saturating_duration_since(std::time::Instant::now());
    let ask = ask(run.publisher.client.clone(), run.log.clone(), path, payload);
    calls::run(run, until_deadline.as_secs().max(1), ask).await
}

/// Publishes the request and waits for the queue to say how it ended.
async fn ask(client: SharedClient, log: LiveLog, path: String, payload: InputPayload) -> Ended {
    let reference = payload.reference.clone().unwrap_or(Value::Null);
    let mut body = Map::new();
    body.insert("request".into(), Value::String(payload.request.clone()));
    if let Some(reference) = &payload.reference {
        body.insert("reference".into(), reference.clone());
    }
    if let Some(timeout) = payload.timeout {
        body.insert("timeout".into(), json!(timeout));
    }
    let body = Value::Object(body);
    let mut asked = false;
    loop {
        // The run's client as it is now: each reclaim brings new credentials.
        let current = client.borrow().clone();
        let answer = if asked {
            current.call(Method::GET, &path, None).await
        } else {
            current.call(Method::PUT, &path, Some(&body)).await
        };
        match answer {
            Ok(input) => {
                if !asked {
                    asked = true;
                    log.info(&format!(
                        "Waiting for the answer until {}",
                        input["expires"].as_str().unwrap_or("the deadline")
                    ));
                }
                match input["state"].as_str() {
                    Some("answered") => {
                        log.info(&format!(
                            "Answered by {}",
                            input["clientId"].as_str().unwrap_or("an anonymous caller")
                        ));
                        return Ended::Done(json!({
                            "response": input["response"].clone(),
                            "reference": reference,
                        }));
                    }
                    Some("expired") => {
                        return Ended::Failed {
                            reason: EXPIRED.to_owned(),
                            outputs: Some(json!({"error": EXPIRED, "reference": reference})),
                        };
                    }
                    _ => {}
                }
            }
            // The queue refused: nothing will change by asking again (a server error or no
            // answer may pass, as while the queue restarts).
            Err(error)
                if error
                    .status()
                    .is_some_and(|status| status.is_client_error()) =>
            {
                return Ended::Failed {
                    reason: format!("asking for input through the queue: {error}"),
                    outputs: None,
                };
            }
            Err(error) => tracing::warn!(%error, "the queue did not answer; trying again"),
        }
        tokio::time::sleep(POLL).await;
    }
}
