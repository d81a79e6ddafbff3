//! What the engines whose task is one call (REST, SMTP, REDIS: Cloudomation's task kinds)
//! share. Each reads its payload and makes its call; this module runs the call within the
//! payload's `maxRunTime` and the run's aborts, and turns how it ended into the run's
//! outcome: its outputs written to the log and published as `public/outputs.json`, exit
//! status 0 when the call did what the payload asked and 1 when not, so that the log and the
//! resolution read as for any other run.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::payload::Invalid;
use super::resolution::{Artifacts, Outcome, Phase, Problem};
use super::task_run::RunContext;

/// The artifact that holds a call's outputs.
pub const OUTPUTS_ARTIFACT: &str = "public/outputs.json";

/// How a call ended, as its engine tells it.
#[derive(Debug)]
pub enum Ended {
    /// The call did what the payload asked: its outputs.
    Done(Value),
    /// The call could not be made, or its answer is not what the payload expects (a status
    /// outside `expected_status_code`, a Redis error): why, and what came back, if anything.
    Failed {
        reason: String,
        outputs: Option<Value>,
    },
}

/// Runs `call` as the run's payload, for at most `max_run_time` seconds.
pub async fn run(
    run: &mut RunContext,
    max_run_time: u64,
    call: impl Future<Output = Ended>,
) -> Outcome {
    let mut outcome = Outcome::new(Phase::Running);
    run.payload_starting();
    let started = Instant::now();
    let ended = run
        .bounded(
            call,
            Duration::from_secs(max_run_time),
            ": the call did not end.",
            &mut outcome,
        )
        .await;
    let outputs = match ended {
        Some(Ended::Done(outputs)) => {
            outcome.exit_code = Some(0);
            Some(outputs)
        }
        Some(Ended::Failed { reason, outputs }) => {
            run.log.error(&reason);
            outcome.exit_code = Some(1);
            outputs
        }
        None => None,
    };
    run.log
        .task_finished(outcome.exit_code, outcome.timed_out, started.elapsed());
    if let Some(outputs) = outputs {
        outcome.reached = Phase::Collecting;
        if let Err(problem) = publish(run, &outputs).await {
            run.log.error(&problem);
            outcome.artifacts = Artifacts::UploadFailed;
        }
    }
    outcome
}

/// The outcome of a run whose call never started: a secret that could not be read, a CA that
/// does not parse; a payload's fault is listed as its schema errors are.
pub fn not_started(run: &RunContext, problem: Problem) -> Outcome {
    let message = match problem {
        Problem::MalformedPayload(message) => {
            return run.malformed_payload(&Invalid(vec![message]));
        }
        Problem::ResourceUnavailable(ref message) | Problem::Internal(ref message) => message,
    };
    run.log.error(message);
    Outcome {
        problem: Some(problem),
        ..Outcome::new(Phase::Preparing)
    }
}

/// Writes the outputs to the log and uploads them as [`OUTPUTS_ARTIFACT`].
async fn publish(run: &RunContext, outputs: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(outputs).unwrap_or_else(|_| outputs.to_string());
    run.log.info("Outputs:");
    run.log.write(format!("{text}\n").as_bytes());
    let path = run.work_dir.join("outputs.json");
    tokio::fs::write(&path, &text)
        .await
        .map_err(|error| format!("writing the outputs: {error}"))?;
    run.publisher
        .file(OUTPUTS_ARTIFACT, &path, Some("application/json"), None)
        .await
}
