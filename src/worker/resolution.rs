//! How a run ends: one pure function of what happened to it. Taskcluster's rule of thumb
//! (reference workers §3.5): a failure *before or around* the user's code is an exception (so
//! the queue may retry it), a failure *of* the user's code is `failed`. docker-worker reported
//! many infrastructure errors as `failed`; Taskfold does not.

use crate::model::ExceptionReason;

/// How far a run got.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    Claimed,
    /// Log live, payload validated, image or connection ready.
    Preparing,
    /// The user's command was started.
    Running,
    /// Artifacts and logs being copied out.
    Collecting,
}

/// Why a run was stopped from outside its command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Abort {
    /// The queue answered 409 to a reclaim: the run was already resolved (canceled, deadline,
    /// claim expired). Nothing more may be reported or uploaded.
    Canceled,
    /// The worker is stopping (SIGTERM).
    WorkerShutdown,
    /// Reclaims kept failing; the claim is about to run out.
    ReclaimFailed(String),
}

/// A problem that is not the user's command's doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The payload is invalid, or asks for something this worker does not offer.
    MalformedPayload(String),
    /// Something the task needs is not there: an image that cannot be pulled, a host that
    /// cannot be reached.
    ResourceUnavailable(String),
    /// The worker or its engine failed.
    Internal(String),
}

/// What became of the artifacts (the log's included).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Artifacts {
    /// All uploaded, or recorded as `error` artifacts where the task did not produce them.
    Uploaded,
    /// An upload failed: the run's outputs are incomplete through no fault of the task.
    UploadFailed,
}

/// Everything the resolution depends on.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reached: Phase,
    /// The command's exit status, when it ran to its end (or was killed at maxRunTime).
    pub exit_code: Option<i64>,
    /// Killed for running longer than maxRunTime.
    pub timed_out: bool,
    pub abort: Option<Abort>,
    pub problem: Option<Problem>,
    pub artifacts: Artifacts,
    /// `onExitStatus.retry` of the payload.
    pub retry_exit_codes: Vec<i64>,
}

/// What the worker tells the queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resolution {
    Completed,
    Failed,
    Exception(ExceptionReason),
    /// Report nothing: the run is no longer this worker's.
    Abandon,
}

impl Outcome {
    pub fn new(reached: Phase) -> Outcome {
        Outcome {
            reached,
            exit_code: None,
            timed_out: false,
            abort: None,
            problem: None,
            artifacts: Artifacts::Uploaded,
            retry_exit_codes: Vec::new(),
        }
    }
}

pub fn resolve(outcome: &Outcome) -> Resolution {
    match &outcome.abort {
        Some(Abort::Canceled) => return Resolution::Abandon,
        Some(Abort::WorkerShutdown) => {
            return Resolution::Exception(ExceptionReason::WorkerShutdown);
        }
        Some(Abort::ReclaimFailed(_)) => {
            return Resolution::Exception(ExceptionReason::InternalError);
        }
        None => {}
    }
    match &outcome.problem {
        Some(Problem::MalformedPayload(_)) => {
            return Resolution::Exception(ExceptionReason::MalformedPayload);
        }
        Some(Problem::ResourceUnavailable(_)) => {
            return Resolution::Exception(ExceptionReason::ResourceUnavailable);
        }
        Some(Problem::Internal(_)) => return Resolution::Exception(ExceptionReason::InternalError),
        None => {}
    }
    if outcome.timed_out {
        return Resolution::Failed;
    }
    if outcome.artifacts == Artifacts::UploadFailed {
        return Resolution::Exception(ExceptionReason::InternalError);
    }
    match outcome.exit_code {
        Some(0) => Resolution::Completed,
        Some(code) if outcome.retry_exit_codes.contains(&code) => {
            Resolution::Exception(ExceptionReason::IntermittentTask)
        }
        Some(_) => Resolution::Failed,
        // The command never ended and nothing says why: the worker lost track of it.
        None => Resolution::Exception(ExceptionReason::InternalError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(exit_code: i64) -> Outcome {
        Outcome {
            exit_code: Some(exit_code),
            ..Outcome::new(Phase::Collecting)
        }
    }

    #[test]
    fn exit_status_decides_a_run_that_ended() {
        assert_eq!(resolve(&ran(0)), Resolution::Completed);
        assert_eq!(resolve(&ran(1)), Resolution::Failed);
        assert_eq!(resolve(&ran(137)), Resolution::Failed);
        let retried = Outcome {
            retry_exit_codes: vec![36, 37],
            ..ran(36)
        };
        assert_eq!(
            resolve(&retried),
            Resolution::Exception(ExceptionReason::IntermittentTask)
        );
        // Only non-zero codes can ask for a retry.
        let zero = Outcome {
            retry_exit_codes: vec![36],
            ..ran(0)
        };
        assert_eq!(resolve(&zero), Resolution::Completed);
    }

    #[test]
    fn max_run_time_fails_even_with_a_zero_or_retry_status() {
        for code in [0, 36, 137] {
            let outcome = Outcome {
                timed_out: true,
                retry_exit_codes: vec![36],
                ..ran(code)
            };
            assert_eq!(resolve(&outcome), Resolution::Failed);
        }
    }

    #[test]
    fn problems_before_the_command_are_exceptions() {
        let cases = [
            (
                Problem::MalformedPayload("x".into()),
                ExceptionReason::MalformedPayload,
            ),
            (
                Problem::ResourceUnavailable("x".into()),
                ExceptionReason::ResourceUnavailable,
            ),
            (
                Problem::Internal("x".into()),
                ExceptionReason::InternalError,
            ),
        ];
        for (problem, reason) in cases {
            let outcome = Outcome {
                problem: Some(problem),
                ..Outcome::new(Phase::Preparing)
            };
            assert_eq!(resolve(&outcome), Resolution::Exception(reason));
        }
    }

    #[test]
    fn aborts_win_over_everything() {
        let canceled = Outcome {
            abort: Some(Abort::Canceled),
            problem: Some(Problem::Internal("x".into())),
            ..ran(1)
        };
        assert_eq!(resolve(&canceled), Resolution::Abandon);
        let shutdown = Outcome {
            abort: Some(Abort::WorkerShutdown),
            ..ran(0)
        };
        assert_eq!(
            resolve(&shutdown),
            Resolution::Exception(ExceptionReason::WorkerShutdown)
        );
        let reclaim = Outcome {
            abort: Some(Abort::ReclaimFailed("x".into())),
            ..Outcome::new(Phase::Running)
        };
        assert_eq!(
            resolve(&reclaim),
            Resolution::Exception(ExceptionReason::InternalError)
        );
    }

    #[test]
    fn a_failed_upload_is_the_worker_s_fault() {
        let outcome = Outcome {
            artifacts: Artifacts::UploadFailed,
            ..ran(0)
        };
        assert_eq!(
            resolve(&outcome),
            Resolution::Exception(ExceptionReason::InternalError)
        );
        let lost = Outcome::new(Phase::Running);
        assert_eq!(
            resolve(&lost),
            Resolution::Exception(ExceptionReason::InternalError)
        );
    }
}
