//! The task definition in the form Taskcluster stores and returns it (`task.yml`): every field
//! present, defaults applied, dates normalized to milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Json, Slugid, Timestamp};

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinition {
    pub provisioner_id: String,
    pub worker_type: String,
    /// `<provisionerId>/<workerType>`; the two legacy halves are kept beside it because every
    /// response carries all three.
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: Slugid,
    pub dependencies: Vec<Slugid>,
    pub requires: Requires,
    pub routes: Vec<String>,
    pub priority: Priority,
    pub retries: u32,
    pub created: Timestamp,
    pub deadline: Timestamp,
    pub expires: Timestamp,
    pub scopes: Vec<String>,
    pub payload: Json,
    pub metadata: Metadata,
    pub tags: BTreeMap<String, String>,
    pub extra: Json,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub source: String,
}

/// When a task with dependencies becomes pending.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Requires {
    /// Every dependency resolved `completed`.
    #[default]
    AllCompleted,
    /// Every dependency resolved, whatever the outcome.
    AllResolved,
}

/// Task priority; the pending queue orders by it (highest first), then by age.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    Highest,
    VeryHigh,
    High,
    Medium,
    Low,
    VeryLow,
    #[default]
    Lowest,
}

impl Priority {
    pub const ALL: [Priority; 7] = [
        Priority::Highest,
        Priority::VeryHigh,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::VeryLow,
        Priority::Lowest,
    ];

    /// Taskcluster's numeric rank: highest = 7 … lowest = 1.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Highest => 7,
            Priority::VeryHigh => 6,
            Priority::High => 5,
            Priority::Medium => 4,
            Priority::Low => 3,
            Priority::VeryLow => 2,
            Priority::Lowest => 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A realistic definition, about 1 KiB encoded, as a docker-worker build task would have.
    pub fn sample_definition(task_group_id: Slugid) -> TaskDefinition {
        let created: Timestamp = "2026-11-22T10:00:00.000Z".parse().unwrap();
        TaskDefinition {
            provisioner_id: "proj-taskfold".into(),
            worker_type: "linux-build".into(),
            task_queue_id: "proj-taskfold/linux-build".into(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id,
            dependencies: vec![],
            requires: Requires::AllCompleted,
            routes: vec!["index.project.taskfold.latest".into()],
            priority: Priority::Lowest,
            retries: 5,
            created,
            deadline: created.plus_millis(86_400_000),
            expires: created.plus_millis(365 * 86_400_000),
            scopes: vec![],
            payload: Json::from_value(
                &serde_json::json!({"image": "debian:12", "command": ["true"], "maxRunTime": 600}),
            ),
            metadata: Metadata {
                name: "build".into(),
                description: "compile".into(),
                owner: "dev@example.com".into(),
                source: "https://example.com/repo".into(),
            },
            tags: BTreeMap::new(),
            extra: Json::empty_object(),
        }
    }

    #[test]
    fn json_uses_taskcluster_field_names() {
        let id = Slugid::nice();
        let json = serde_json::to_value(sample_definition(id)).unwrap();
        assert_eq!(json["taskQueueId"], "proj-taskfold/linux-build");
        assert_eq!(json["taskGroupId"], id.to_string());
        assert_eq!(json["priority"], "lowest");
        assert_eq!(json["requires"], "all-completed");
        assert_eq!(json["created"], "2026-11-22T10:00:00.000Z");
        let back: TaskDefinition = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample_definition(id));
    }
}
