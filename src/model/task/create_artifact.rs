//! The `createArtifact` decision (reference §6.2), a command of the task that owns the run
//! (see [`Command::CreateArtifact`](super::Command::CreateArtifact)).

use crate::model::{ApiError, Artifact, Event, ReasonResolved, Run, RunState, Task, Timestamp};

/// A run resolved `exception` still takes artifacts this long afterwards (the worker may be
/// uploading what it had when it was told to stop).
const EXCEPTION_GRACE_MILLIS: i64 = 25 * 60 * 1000;
/// How far in the past an artifact's `expires` may be (clock drift).
const EXPIRES_DRIFT_MILLIS: i64 = 15 * 60 * 1000;

/// Whether `run` still takes artifacts at `now`, their creation and their blobs' uploads
/// alike: while it runs, and up to 25 minutes after it was resolved `exception`.
pub fn takes_artifacts(run: &Run, now: Timestamp) -> bool {
    let exception_grace = run.state == RunState::Exception
        && run.reason_resolved != Some(ReasonResolved::Completed)
        && run
            .resolved
            .is_some_and(|resolved| resolved.plus_millis(EXCEPTION_GRACE_MILLIS) > now);
    run.state == RunState::Running || exception_grace
}

/// Decides whether `artifact` may be created as `name` of run `run_id`, in Taskcluster's
/// order: the expiry, the task, the run, its claim, the task's expiry, the run's state, and
/// last an existing artifact of that name.
pub fn decide(
    task: Option<&Task>,
    run_id: u32,
    name: String,
    artifact: Artifact,
    now: Timestamp,
) -> Result<Vec<Event>, ApiError> {
    if artifact.expires < now.plus_millis(-EXPIRES_DRIFT_MILLIS) {
        return Err(ApiError::input(format!(
            "Artifact expires ({}) in the past",
            artifact.expires
        )));
    }
    let Some(task) = task else {
        return Err(ApiError::input("Task not found"));
    };
    let Some(run) = task.runs.get(run_id as usize) else {
        return Err(ApiError::input("Run not found"));
    };
    if run.worker_group.is_none() {
        return Err(ApiError::input("Run was not claimed by a worker"));
    }
    if artifact.expires > task.definition.expires {
        return Err(ApiError::input(format!(
            "Artifact expires ({}) after the task expiration {} (task.expires < artifact.expires) \
             - this is not allowed, artifacts may not expire after the task they belong to",
            artifact.expires, task.definition.expires
        )));
    }
    if !takes_artifacts(run, now) {
        return Err(ApiError::conflict(format!(
            "Artifacts cannot be created for a task after it is resolved, unless it is resolved \
             'exception', and even in this case only up to 25 min past resolution. This is to \
             ensure that artifacts have been uploaded before a task is 'completed' and output is \
             consumed by a dependent task.\n\nTask status: {}",
            serde_json::to_string_pretty(&task.status()).unwrap_or_default()
        )));
    }
    let replaces = match task.artifacts.get(&(run_id, name.clone())) {
        Some(existing) => existing.replace(&artifact)?,
        None => true,
    };
    Ok(if replaces {
        vec![Event::ArtifactCreated {
            run_id,
            name,
            artifact,
        }]
    } else {
        Vec::new()
    })
}
