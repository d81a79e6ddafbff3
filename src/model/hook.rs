//! What firing a hook means, free of I/O: its schedule (cron patterns, UTC, with optional
//! seconds, as Taskcluster's `cron-parser` reads them), the JSON-e context its task template
//! is rendered with, and the defaults a rendered task gets.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde_json::{Value, json};

use super::{Slugid, Timestamp};

/// Longest hook group id and hook id.
pub const MAX_ID: usize = 1_000;

/// Taskcluster's `hookGroupId`: `^[a-zA-Z0-9-_]{1,1000}$`.
pub fn is_hook_group_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Taskcluster's `hookId`: `^[a-zA-Z0-9-_/]{1,1000}$`.
pub fn is_hook_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_/".contains(&byte))
}

/// A hook's name among documents: `<hookGroupId>/<hookId>`.
pub fn hook_name(hook_group_id: &str, hook_id: &str) -> String {
    format!("{hook_group_id}/{hook_id}")
}

/// A cron pattern of a schedule: five fields, or six with seconds first, or an alias
/// (`@daily`, `@hourly`, …); `Err` says what is wrong with it.
pub fn parse_cron(pattern: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|error| format!("{error} in `{pattern}`"))
}

/// The first instant after `after` at which any pattern of `schedule` fires; `None` for an
/// empty schedule (or one that never fires).
pub fn next_fire(schedule: &[String], after: Timestamp) -> Option<Timestamp> {
    // Patterns name whole seconds: the search starts at the second `after` falls in.
    let start: DateTime<Utc> = DateTime::from_timestamp(after.millis().div_euclid(1000), 0)?;
    schedule
        .iter()
        .filter_map(|pattern| parse_cron(pattern).ok())
        .filter_map(|cron| cron.find_next_occurrence(&start, false).ok())
        .map(|at| Timestamp::from_millis(at.timestamp_millis()))
        .min()
}

/// How a hook was fired (`firedBy` in the context and the last fires).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiredBy {
    Schedule,
    TriggerHook,
    TriggerHookWithToken,
    PulseMessage,
}

impl FiredBy {
    pub fn name(self) -> &'static str {
        match self {
            FiredBy::Schedule => "schedule",
            FiredBy::TriggerHook => "triggerHook",
            FiredBy::TriggerHookWithToken => "triggerHookWithToken",
            FiredBy::PulseMessage => "pulseMessage",
        }
    }
}

/// The JSON-e context of a fire: `firedBy`, `taskId`, `now`, and `payload` (all but
/// scheduled fires) and `clientId` (triggerHook only).
pub fn context(
    fired_by: FiredBy,
    task_id: Slugid,
    now: Timestamp,
    payload: Option<&Value>,
    client_id: Option<&str>,
) -> Value {
    let mut context = json!({
        "firedBy": fired_by.name(),
        "taskId": task_id,
        "now": now,
    });
    if let Some(payload) = payload {
        context["payload"] = payload.clone();
    }
    if let (FiredBy::TriggerHook, Some(client_id)) = (fired_by, client_id) {
        context["clientId"] = json!(client_id);
    }
    context
}

/// Renders a hook's task template with JSON-e in `context`. The `json-e` crate binds `now`
/// to the clock over any `now` of the context, so the context's (the fire's time) is bound
/// around the template with `$let`, which shadows the crate's.
pub fn render(template: &Value, context: &Value) -> Result<Value, String> {
    let wrapped = match context.get("now") {
        Some(now) => json!({"$let": {"now": now}, "in": template}),
        None => template.clone(),
    };
    json_e::render(&wrapped, context).map_err(|error| error.to_string())
}

/// Fills what a rendered task leaves out, as Taskcluster's hooks do: `created` (now),
/// `deadline` (a day later), `expires` (a month later) and `taskGroupId` (the task's id).
pub fn with_defaults(mut task: Value, task_id: Slugid, now: Timestamp) -> Value {
    if let Value::Object(fields) = &mut task {
        let month_later = DateTime::from_timestamp_millis(now.millis())
            .and_then(|at| at.checked_add_months(chrono::Months::new(1)))
            .map_or(now.plus_millis(31 * 86_400_000), |at| {
                Timestamp::from_millis(at.timestamp_millis())
            });
        let defaults = [
            ("created", json!(now)),
            ("deadline", json!(now.plus_millis(86_400_000))),
            ("expires", json!(month_later)),
            ("taskGroupId", json!(task_id)),
        ];
        for (name, value) in defaults {
            fields.entry(name).or_insert(value);
        }
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_taskcluster_s_patterns() {
        assert!(is_hook_group_id("project-a_1") && !is_hook_group_id("a/b"));
        assert!(is_hook_id("nightly/linux-64") && !is_hook_id("a:b") && !is_hook_id(""));
        assert!(!is_hook_id(&"x".repeat(1_001)));
    }

    #[test]
    fn schedules_take_five_or_six_fields_and_aliases() {
        let at = |text: &str| text.parse::<Timestamp>().unwrap();
        let now = at("2030-01-01T10:00:30.250Z");
        let every = |patterns: &[&str]| {
            let schedule: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            next_fire(&schedule, now)
        };
        assert_eq!(
            every(&["*/5 * * * * *"]),
            Some(at("2030-01-01T10:00:35.000Z"))
        );
        assert_eq!(every(&["0 12 * * *"]), Some(at("2030-01-01T12:00:00.000Z")));
        assert_eq!(
            every(&["0 0 9,21 * * 1-5", "@hourly"]),
            Some(at("2030-01-01T11:00:00.000Z"))
        );
        assert_eq!(every(&[]), None);
        for bad in ["nope", "61 * * * *", "* * * *"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fire_s_time_is_the_template_s_now() {
        let now: Timestamp = "2030-01-01T00:00:02.000Z".parse().unwrap();
        let context = context(FiredBy::Schedule, Slugid::MIN, now, None, None);
        let template = json!({"at": "${now}", "later": {"$fromNow": "1 day"}});
        assert_eq!(
            render(&template, &context).unwrap(),
            json!({"at": "2030-01-01T00:00:02.000Z", "later": "2030-01-02T00:00:02.000Z"})
        );
    }

    #[test]
    fn a_rendered_task_gets_taskcluster_s_defaults() {
        let task_id = Slugid::MIN;
        let now: Timestamp = "2030-01-31T00:00:00.000Z".parse().unwrap();
        let task = with_defaults(json!({"deadline": "kept"}), task_id, now);
        assert_eq!(task["deadline"], "kept");
        assert_eq!(task["created"], json!(now));
        assert_eq!(task["expires"], "2030-02-28T00:00:00.000Z");
        assert_eq!(task["taskGroupId"], json!(task_id));
    }
}
