//! Documents: what the services beside the queue keep, each a named value of one kind — a
//! secret (Secrets), an indexed task (Index), a client or a role (Auth), a hook or one of its
//! fires (Hooks). Like tasks they are entities of the log: every
//! change is a [`Event::DocumentPut`] or [`Event::DocumentRemoved`], replayed, partitioned by
//! [`partition_key`] and folded into the partition store, where they live (memory holds only
//! those changed since the last flush). Here: their types, names and decisions.

use serde::{Deserialize, Serialize};

use super::{ApiError, ErrorCode, Event, Json, Slugid, Timestamp};

/// What kind of document; its number is the first byte of the document's store key and of
/// its expiry entry, so it never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DocumentKind {
    Secret,
    IndexedTask,
    Client,
    Role,
    Hook,
    LastFire,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 6] = [
        DocumentKind::Secret,
        DocumentKind::IndexedTask,
        DocumentKind::Client,
        DocumentKind::Role,
        DocumentKind::Hook,
        DocumentKind::LastFire,
    ];

    pub fn number(self) -> u8 {
        match self {
            DocumentKind::Secret => 0,
            DocumentKind::IndexedTask => 1,
            DocumentKind::Client => 2,
            DocumentKind::Role => 3,
            DocumentKind::Hook => 4,
            DocumentKind::LastFire => 5,
        }
    }

    pub fn from_number(number: u8) -> Option<DocumentKind> {
        DocumentKind::ALL
            .into_iter()
            .find(|kind| kind.number() == number)
    }

    /// How long an expired document is kept (answering "expired" rather than "not found")
    /// before it is removed: secrets answer `410 ResourceExpired` for a day after expiry,
    /// the others are removed at once (those that are removed at all).
    pub fn kept_after_expiry_millis(self) -> i64 {
        match self {
            DocumentKind::Secret => 24 * 3_600_000,
            DocumentKind::IndexedTask
            | DocumentKind::Client
            | DocumentKind::Role
            | DocumentKind::Hook
            | DocumentKind::LastFire => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Document {
    Secret(Secret),
    IndexedTask(IndexedTask),
    Client(ClientRecord),
    Role(RoleRecord),
    Hook(HookRecord),
    LastFire(LastFire),
}

impl Document {
    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::Secret(_) => DocumentKind::Secret,
            Document::IndexedTask(_) => DocumentKind::IndexedTask,
            Document::Client(_) => DocumentKind::Client,
            Document::Role(_) => DocumentKind::Role,
            Document::Hook(_) => DocumentKind::Hook,
            Document::LastFire(_) => DocumentKind::LastFire,
        }
    }

    /// When the document stops being valid, if it does.
    pub fn expires(&self) -> Option<Timestamp> {
        match self {
            Document::Secret(secret) => Some(secret.expires),
            Document::IndexedTask(entry) => Some(entry.expires),
            Document::Client(client) => Some(client.expires),
            Document::Role(_) | Document::Hook(_) => None,
            Document::LastFire(fire) => Some(fire.task_create_time.plus_one_year()),
        }
    }

    /// When the document is removed, if ever: its expiry plus what its kind keeps after it.
    /// A client is removed only if it asked to be (`deleteOnExpiration`); an expired one
    /// that did not stays, refused.
    pub fn removed_at(&self) -> Option<Timestamp> {
        if let Document::Client(client) = self
            && !client.delete_on_expiration
        {
            return None;
        }
        Some(
            self.expires()?
                .plus_millis(self.kind().kept_after_expiry_millis()),
        )
    }
}

/// A secret of the Secrets service: a JSON object and when it expires. Its value never goes
/// to text logs, metrics, public exchanges or task history.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    pub value: Json,
    pub expires: Timestamp,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Secret")
            .field("value", &"(omitted)")
            .field("expires", &self.expires)
            .finish()
    }
}

/// A client of the Auth service made through the API. Its access token is not kept: the
/// token is derived from `token_seed` with the deployment's token key (see
/// `auth::clients::derive_access_token`), so neither the log nor the store holds a usable
/// credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub description: String,
    pub token_seed: String,
    pub scopes: Vec<String>,
    pub expires: Timestamp,
    pub delete_on_expiration: bool,
    pub disabled: bool,
    pub created: Timestamp,
    pub last_modified: Timestamp,
    pub last_rotated: Timestamp,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientRecord")
            .field("scopes", &self.scopes)
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A role of the Auth service made through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub description: String,
    pub scopes: Vec<String>,
    pub created: Timestamp,
    pub last_modified: Timestamp,
}

/// A hook of the Hooks service: its definition as given (JSON texts where Taskcluster's API
/// keeps free-form JSON), and what firing it needs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    pub metadata: Json,
    pub bindings: Vec<HookBinding>,
    pub schedule: Vec<String>,
    /// The JSON-e template of the task.
    pub task: Json,
    pub trigger_schema: Json,
    pub trigger_token: String,
    /// The task id the next scheduled fire creates, chosen in advance so that a fire repeated
    /// after a crash creates the same task.
    pub next_task_id: Slugid,
    /// When the schedule fires next; `None` without a schedule.
    pub next_scheduled_date: Option<Timestamp>,
}

impl std::fmt::Debug for HookRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HookRecord")
            .field("schedule", &self.schedule)
            .field("next_scheduled_date", &self.next_scheduled_date)
            .finish_non_exhaustive()
    }
}

/// An exchange and routing-key pattern whose messages fire a hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookBinding {
    pub exchange: String,
    pub routing_key_pattern: String,
}

/// One fire of a hook that was not declined: the task it created, or why it did not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastFire {
    /// `schedule`, `triggerHook`, `triggerHookWithToken` or `pulseMessage`.
    pub fired_by: String,
    pub task_id: Slugid,
    pub task_create_time: Timestamp,
    /// `None` when the task was created.
    pub error: Option<String>,
}

/// The name of a hook's fire: the hook's name, then the fire's time counted down from the
/// end of time (so that a hook's fires are in newest-first order) and its task id. Hook ids
/// hold no `:`.
pub fn last_fire_name(hook: &str, at: Timestamp, task_id: Slugid) -> String {
    format!("{hook}:{:019}:{task_id}", i64::MAX - at.millis().max(0))
}

/// The store-key prefix of a hook's fires.
pub fn last_fires_of(hook: &str) -> String {
    format!("{hook}:")
}

/// The task an index path points at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexedTask {
    pub task_id: Slugid,
    pub rank: i64,
    pub data: Json,
    pub expires: Timestamp,
}

/// The envelope key a document's events carry, which picks its partition. Keys of other
/// entities are slugids or start with `worker/`, so these never collide with them. An indexed
/// task is keyed by its namespace, so that one partition holds every task of a namespace
/// (`listTasks` reads one partition).
pub fn partition_key(kind: DocumentKind, name: &str) -> String {
    match kind {
        DocumentKind::Secret => format!("secret/{name}"),
        DocumentKind::IndexedTask => format!("index/{}", split_index_path(name).0),
        DocumentKind::Client => format!("client/{name}"),
        DocumentKind::Role => format!("role/{name}"),
        // A hook's fires live in the hook's partition.
        DocumentKind::Hook => format!("hook/{name}"),
        DocumentKind::LastFire => format!("hook/{}", name.split(':').next().unwrap_or(name)),
    }
}

/// The key of a document in the partition store: its kind's number, then the name; an index
/// path's namespace and last segment are separated by a zero byte, so that the tasks of one
/// namespace are adjacent and in name order.
pub fn store_key(kind: DocumentKind, name: &str) -> Vec<u8> {
    match kind {
        DocumentKind::Secret
        | DocumentKind::Client
        | DocumentKind::Role
        | DocumentKind::Hook
        | DocumentKind::LastFire => {
            let mut key = Vec::with_capacity(1 + name.len());
            key.push(kind.number());
            key.extend_from_slice(name.as_bytes());
            key
        }
        DocumentKind::IndexedTask => {
            let (namespace, last) = split_index_path(name);
            let mut key = index_namespace_prefix(namespace);
            key.extend_from_slice(last.as_bytes());
            key
        }
    }
}

/// The store-key prefix of the indexed tasks directly in `namespace` (its tasks, not those
/// of the namespaces below it).
pub fn index_namespace_prefix(namespace: &str) -> Vec<u8> {
    let mut prefix = vec![DocumentKind::IndexedTask.number()];
    prefix.extend_from_slice(namespace.as_bytes());
    prefix.push(0);
    prefix
}

/// The kind and name of a [`store_key`].
pub fn from_store_key(key: &[u8]) -> Option<(DocumentKind, String)> {
    let kind = DocumentKind::from_number(*key.first()?)?;
    let rest = std::str::from_utf8(key.get(1..)?).ok()?;
    let name = match kind {
        DocumentKind::Secret
        | DocumentKind::Client
        | DocumentKind::Role
        | DocumentKind::Hook
        | DocumentKind::LastFire => rest.to_owned(),
        DocumentKind::IndexedTask => {
            let (namespace, last) = rest.split_once('\0')?;
            join_index_path(namespace, last)
        }
    };
    Some((kind, name))
}

/// An index path split at its last `.`: the namespace (empty for a one-segment path) and
/// the name.
pub fn split_index_path(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

pub fn join_index_path(namespace: &str, name: &str) -> String {
    match (namespace.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (_, true) => namespace.to_owned(),
        _ => format!("{namespace}.{name}"),
    }
}

/// Longest index path (Taskcluster's `namespace` is at most 255 characters).
pub const MAX_INDEX_PATH: usize = 255;

/// Whether `path` is an index path: dot-separated non-empty segments of letters, digits and
/// `_!~*'()%-` (Taskcluster's `namespaceFormat`), at most [`MAX_INDEX_PATH`] long.
pub fn is_index_path(path: &str) -> bool {
    path.len() <= MAX_INDEX_PATH
        && path.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"_!~*'()%-".contains(&byte))
        })
}

/// Longest secret name.
pub const MAX_SECRET_NAME: usize = 1_024;
/// Largest secret value, as JSON text: a secret is a credential or a key, not a file.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Whether `name` may name a secret: non-empty, at most [`MAX_SECRET_NAME`] bytes, without
/// control characters.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_SECRET_NAME && !name.chars().any(char::is_control)
}

/// The day after `expires` begins (UTC): a namespace of the index lives until then, and only
/// ever later, as Taskcluster's does.
pub fn namespace_expiry(expires: Timestamp) -> Timestamp {
    const DAY: i64 = 86_400_000;
    Timestamp::from_millis((expires.millis().div_euclid(DAY) + 1) * DAY)
}

/// Every namespace above an index path, as (parent, name) pairs from the top: `a.b.c.task`
/// gives (``, `a`), (`a`, `b`), (`a.b`, `c`).
pub fn namespaces_above(path: &str) -> Vec<(&str, &str)> {
    let (namespace, _) = split_index_path(path);
    if namespace.is_empty() {
        return Vec::new();
    }
    let mut levels = Vec::new();
    let mut start = 0;
    for (at, _) in namespace.match_indices('.').chain([(namespace.len(), "")]) {
        levels.push((&namespace[..start.max(1) - 1], &namespace[start..at]));
        start = at + 1;
    }
    levels
}

/// The routes of a task that index it when it completes start with this (`index.<path>`).
pub const INDEX_ROUTE_PREFIX: &str = "index.";

/// The index entries a completed task's routes ask for, as Taskcluster's index service makes
/// them: one per `index.<path>` route whose path is valid, with `rank`, `data` and `expires`
/// from `task.extra.index` (defaults 0, `{}` and the task's `expires`). A `rank` that is not
/// a number, `data` that is not an object, or an `expires` that is not a date means no entry
/// at all.
pub fn index_entries(task: &super::Task) -> Vec<(String, IndexedTask)> {
    let definition = &task.definition;
    let paths: Vec<&str> = definition
        .routes
        .iter()
        .filter_map(|route| route.strip_prefix(INDEX_ROUTE_PREFIX))
        .filter(|path| is_index_path(path))
        .collect();
    if paths.is_empty() {
        return Vec::new();
    }
    let extra = definition.extra.to_value();
    let options = extra.get("index");
    let option = |name: &str| options.and_then(|options| options.get(name));
    let rank = match option("rank") {
        None => 0,
        Some(rank) => match rank
            .as_i64()
            .or_else(|| rank.as_f64().map(|rank| rank as i64))
        {
            Some(rank) => rank,
            None => return Vec::new(),
        },
    };
    let data = match option("data") {
        None => Json::empty_object(),
        Some(data) if data.is_object() => Json::from_value(data),
        Some(_) => return Vec::new(),
    };
    let expires = match option("expires") {
        None => definition.expires,
        Some(expires) => match expires.as_str().and_then(|text| text.parse().ok()) {
            Some(expires) => expires,
            None => return Vec::new(),
        },
    };
    paths
        .into_iter()
        .map(|path| {
            let entry = IndexedTask {
                task_id: task.task_id,
                rank,
                data: data.clone(),
                expires,
            };
            (path.to_owned(), entry)
        })
        .collect()
}

/// What can be asked of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DocumentCommand {
    /// Put the document, replacing what is there — except that an indexed task of a higher
    /// rank stays (an equal rank is replaced: the latest insert wins).
    Put(Document),
    /// Put the document where there is none (`409 RequestConflict` otherwise).
    Create(Document),
    /// Remove it, if it is there.
    Remove,
    /// Remove it if it has been expired for as long as its kind keeps it.
    Expire,
}

/// The events of `command` on the document `current` (of `kind`, named `name`) at `now`.
pub fn decide(
    kind: DocumentKind,
    name: &str,
    current: Option<&Document>,
    command: DocumentCommand,
    now: Timestamp,
) -> Result<Vec<Event>, ApiError> {
    let removed = || Event::DocumentRemoved {
        kind,
        name: name.to_owned(),
    };
    Ok(match command {
        DocumentCommand::Create(_) if current.is_some() => {
            return Err(ApiError::new(
                ErrorCode::RequestConflict,
                format!("`{name}` already exists"),
            ));
        }
        DocumentCommand::Create(document) | DocumentCommand::Put(document) => {
            if document.kind() != kind {
                return Err(ApiError::new(
                    ErrorCode::InternalServerError,
                    "a document put under another kind",
                ));
            }
            if let (Some(Document::IndexedTask(existing)), Document::IndexedTask(new)) =
                (current, &document)
                && existing.rank > new.rank
            {
                return Ok(Vec::new());
            }
            vec![Event::DocumentPut {
                name: name.to_owned(),
                document,
            }]
        }
        DocumentCommand::Remove => current.map(|_| removed()).into_iter().collect(),
        DocumentCommand::Expire => current
            .filter(|document| document.removed_at().is_some_and(|at| at <= now))
            .map(|_| removed())
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rank: i64) -> Document {
        Document::IndexedTask(IndexedTask {
            task_id: Slugid::MIN,
            rank,
            data: Json::empty_object(),
            expires: Timestamp::from_millis(1_000),
        })
    }

    #[test]
    fn index_paths_follow_taskcluster_s_format() {
        for good in [
            "a",
            "a.b.c",
            "gecko.v2.mozilla-central.latest",
            "x_!~*'()%-9",
        ] {
            assert!(is_index_path(good), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a/b", "a b", &"a".repeat(256)] {
            assert!(!is_index_path(bad), "{bad}");
        }
    }

    #[test]
    fn store_keys_round_trip_and_keep_a_namespace_together() {
        for (kind, name) in [
            (DocumentKind::Secret, "project/a/b"),
            (DocumentKind::IndexedTask, "a.b.c"),
            (DocumentKind::IndexedTask, "top"),
        ] {
            assert_eq!(
                from_store_key(&store_key(kind, name)),
                Some((kind, name.to_owned()))
            );
        }
        let prefix = index_namespace_prefix("a.b");
        assert!(store_key(DocumentKind::IndexedTask, "a.b.zz").starts_with(&prefix));
        assert!(!store_key(DocumentKind::IndexedTask, "a.b.c.d").starts_with(&prefix));
        assert!(
            store_key(DocumentKind::IndexedTask, "top").starts_with(&index_namespace_prefix(""))
        );
    }

    #[test]
    fn namespaces_above_a_path_run_from_the_top() {
        assert_eq!(
            namespaces_above("a.bb.c.task"),
            vec![("", "a"), ("a", "bb"), ("a.bb", "c")]
        );
        assert_eq!(namespaces_above("task"), Vec::<(&str, &str)>::new());
        assert_eq!(namespaces_above("a.task"), vec![("", "a")]);
    }

    #[test]
    fn a_namespace_lives_until_the_day_after_its_task_expires() {
        let day = 86_400_000;
        assert_eq!(
            namespace_expiry(Timestamp::from_millis(day + 5)),
            Timestamp::from_millis(2 * day)
        );
        assert_eq!(
            namespace_expiry(Timestamp::from_millis(day)),
            Timestamp::from_millis(2 * day)
        );
    }

    #[test]
    fn a_lower_rank_never_replaces_a_higher_one() {
        let kind = DocumentKind::IndexedTask;
        let now = Timestamp::from_millis(0);
        let put = |rank| DocumentCommand::Put(entry(rank));
        assert!(
            decide(kind, "a.b", Some(&entry(5)), put(4), now)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            decide(kind, "a.b", Some(&entry(5)), put(5), now)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(decide(kind, "a.b", None, put(-1), now).unwrap().len(), 1);
    }

    #[test]
    fn expiry_removes_only_what_has_been_expired_long_enough() {
        let secret = Document::Secret(Secret {
            value: Json::empty_object(),
            expires: Timestamp::from_millis(0),
        });
        let kind = DocumentKind::Secret;
        let expire = |now| decide(kind, "s", Some(&secret), DocumentCommand::Expire, now).unwrap();
        assert!(expire(Timestamp::from_millis(1_000)).is_empty());
        assert_eq!(expire(Timestamp::from_millis(24 * 3_600_000)).len(), 1);
        assert!(
            decide(
                kind,
                "s",
                None,
                DocumentCommand::Remove,
                Timestamp::from_millis(0)
            )
            .unwrap()
            .is_empty()
        );
    }
}
