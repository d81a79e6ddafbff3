//! A person's input, as an INPUT task asks for it (Cloudomation's INPUT kind,
//! `schemas/input-payload.json`): the run's worker records a request, someone answers it
//! through the queue, and the worker reads the answer back. The request and its answer are
//! events of the task, so they are durable and replayed like the rest of it; that the request
//! expired is derived from its `expires` when it is read, never recorded.

use serde::{Deserialize, Serialize};

use super::{Json, Timestamp};

/// A run's request for input, folded from `InputRequested` and `InputAnswered`. A run asks
/// at most once.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct InputRequest {
    pub run_id: u32,
    /// The question, as the payload's `request` gives it.
    pub request: String,
    /// What the asker wants echoed back with the answer (the payload's `reference`).
    pub reference: Option<Json>,
    pub requested: Timestamp,
    /// From this instant on the request can no longer be answered: its `timeout` after it
    /// was made, or the task's deadline if that comes first.
    pub expires: Timestamp,
    pub answer: Option<InputAnswer>,
}

/// How a request was answered.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct InputAnswer {
    /// Any JSON value the person gave.
    pub response: Json,
    pub answered: Timestamp,
    /// Who answered (the clientId of the call), if the call had credentials.
    pub client_id: Option<String>,
}

/// Where a request stands, as the API names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputState {
    /// It may be answered.
    Waiting,
    Answered,
    /// It can no longer be answered: its time passed, or its run ended without an answer.
    Expired,
}

impl InputRequest {
    /// Where the request stands at `now`, while its run is (`run_running`) or is not running.
    pub fn state(&self, run_running: bool, now: Timestamp) -> InputState {
        if self.answer.is_some() {
            InputState::Answered
        } else if run_running && now < self.expires {
            InputState::Waiting
        } else {
            InputState::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_waits_until_answered_expired_or_its_run_ends() {
        let mut input = InputRequest {
            run_id: 0,
            request: "deploy?".into(),
            reference: None,
            requested: Timestamp::from_millis(0),
            expires: Timestamp::from_millis(100),
            answer: None,
        };
        let at = Timestamp::from_millis;
        assert_eq!(input.state(true, at(99)), InputState::Waiting);
        assert_eq!(input.state(true, at(100)), InputState::Expired);
        assert_eq!(input.state(false, at(1)), InputState::Expired);
        input.answer = Some(InputAnswer {
            response: Json::from_value(&serde_json::json!("yes")),
            answered: at(50),
            client_id: None,
        });
        assert_eq!(input.state(false, at(500)), InputState::Answered);
    }
}
