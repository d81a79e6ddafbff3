//! The Hooks service under `<rootUrl>/api/hooks/v1/`: hooks (`createHook`, `updateHook`,
//! `removeHook`, `hook`, `listHooks`, `listHookGroups`, `getHookStatus`), their trigger tokens,
//! firing (`triggerHook`, `triggerHookWithToken`, and the schedule), and `listLastFires`.
//! Hooks and their fires are documents of the log. A fire renders the hook's task template
//! with JSON-e (`model::hook` gives the context and defaults) and creates the task as the
//! hook's role, `assume:hook-id:<hookGroupId>/<hookId>`, through createTask's own checks. The
//! scheduler fires each hook of the partitions this node serves when its schedule says, with
//! the task id chosen in advance, so a fire repeated after a crash creates the same task. The
//! binding listener fires hooks whose `bindings` match a message of Taskfold's own exchanges
//! (as heard by this node's listeners), with the message's body as the payload.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::routes::tasks::create_task_from;
use crate::api::routes::{get, template};
use crate::api::server::State;
use crate::auth::{self, Authenticated, ScopeExpression, ScopeSet};
use crate::model::binding::{Binding, Pattern};
use crate::model::document::{self, HookBinding, HookRecord, LastFire};
use crate::model::hook::{self, FiredBy};
use crate::model::{
    ApiError, Document, DocumentCommand, DocumentKind, ErrorCode, Json, Slugid, Timestamp,
};

static LIST_HOOK_GROUPS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:list-hooks:")));
static LIST_HOOKS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:list-hooks:<hookGroupId>")));
static GET_HOOK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:get:<hookGroupId>:<hookId>")));
static HOOK_STATUS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:status:<hookGroupId>/<hookId>")));
static MODIFY_HOOK: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!({"AllOf": [
        "hooks:modify-hook:<hookGroupId>/<hookId>",
        "assume:hook-id:<hookGroupId>/<hookId>",
    ]}))
});
static REMOVE_HOOK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:modify-hook:<hookGroupId>/<hookId>")));
static TRIGGER_HOOK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:trigger-hook:<hookGroupId>/<hookId>")));
static GET_TRIGGER_TOKEN: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:get-trigger-token:<hookGroupId>/<hookId>")));
static RESET_TRIGGER_TOKEN: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:reset-trigger-token:<hookGroupId>/<hookId>")));
static LIST_LAST_FIRES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("hooks:list-last-fires:<hookGroupId>/<hookId>")));

/// Who the tasks of hooks are created by, in the log and task history.
const HOOKS_CLIENT_ID: &str = "static/taskcluster/hooks";
/// Exchanges whose messages may not fire hooks (Taskcluster's deny list): a hook bound to
/// task creation, or to hooks' own changes, could fire itself for ever.
const DENIED_EXCHANGES: [&str; 2] = [
    "exchange/taskcluster-queue/v1/task-created",
    "exchange/taskcluster-hooks/",
];
/// How often the scheduler looks for hooks whose time has come.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// How often the binding listener reads the hooks again besides when one changes (a node
/// that gained a partition finds its hooks so).
const BINDINGS_REFRESH: Duration = Duration::from_secs(30);
/// Longest error kept with a fire.
const MAX_FIRE_ERROR: usize = 131_072;

pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(response::not_found));
    config
        .service(resource("/hooks").route(get().to(list_hook_groups)))
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}/trigger/{token}")
                .route(web::post().to(trigger_hook_with_token)),
        )
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}/trigger")
                .route(web::post().to(trigger_hook)),
        )
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}/token")
                .route(get().to(get_trigger_token))
                .route(web::post().to(reset_trigger_token)),
        )
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}/status").route(get().to(get_hook_status)),
        )
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}/last-fires")
                .route(get().to(list_last_fires)),
        )
        .service(
            resource("/hooks/{hookGroupId}/{hookId:.+}")
                .route(get().to(hook))
                .route(web::put().to(create_hook))
                .route(web::post().to(update_hook))
                .route(web::delete().to(remove_hook)),
        )
        .service(resource("/hooks/{hookGroupId}").route(get().to(list_hooks)));
}

fn ids(call: &Call) -> Result<(String, String), ApiError> {
    let (group, id) = (call.param("hookGroupId"), call.param("hookId"));
    if !hook::is_hook_group_id(group) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            "Invalid URL parameter `hookGroupId`: it must match `^[a-zA-Z0-9-_]{1,1000}$`",
        ));
    }
    if !hook::is_hook_id(id) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            "Invalid URL parameter `hookId`: it must match `^[a-zA-Z0-9-_/]{1,1000}$`",
        ));
    }
    Ok((group.to_owned(), id.to_owned()))
}

fn no_such_hook() -> ApiError {
    ApiError::not_found("No such hook")
}

async fn load(state: &State, name: &str) -> Result<HookRecord, ApiError> {
    match state.engine.document(DocumentKind::Hook, name).await? {
        Some(Document::Hook(record)) => Ok(record),
        _ => Err(no_such_hook()),
    }
}

async fn put(
    state: &State,
    name: &str,
    command: DocumentCommand,
    client_id: Option<String>,
) -> Result<(), ApiError> {
    state
        .engine
        .execute_document(DocumentKind::Hook, name, command, client_id)
        .await?;
    Ok(())
}

/// Taskcluster's hook-definition.
fn definition_json(group: &str, id: &str, record: &HookRecord) -> Value {
    let bindings: Vec<Value> = record
        .bindings
        .iter()
        .map(|binding| {
            json!({"exchange": binding.exchange, "routingKeyPattern": binding.routing_key_pattern})
        })
        .collect();
    json!({
        "hookGroupId": group,
        "hookId": id,
        "metadata": record.metadata.to_value(),
        "bindings": bindings,
        "schedule": record.schedule,
        "task": record.task.to_value(),
        "triggerSchema": record.trigger_schema.to_value(),
    })
}

/// The create-hook-request schema.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HookInput {
    hook_group_id: Option<String>,
    hook_id: Option<String>,
    metadata: Metadata,
    bindings: Option<Vec<BindingInput>>,
    schedule: Option<Vec<String>>,
    task: Value,
    trigger_schema: Option<Value>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Metadata {
    name: String,
    description: String,
    owner: String,
    #[serde(default = "yes")]
    email_on_error: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BindingInput {
    exchange: String,
    routing_key_pattern: String,
}

const HOOK_SCHEMA: &str = "v1/create-hook-request.json";

fn schema_problem(text: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::InputValidationError,
        format!("the request does not match {HOOK_SCHEMA}: {text}"),
    )
}

/// A hook as the request defines it, checked as Taskcluster checks it (and its template
/// rendered once, so that a template JSON-e cannot read is refused now, not at its first
/// fire): the parts of its record the request gives.
struct Defined {
    metadata: Json,
    bindings: Option<Vec<HookBinding>>,
    schedule: Vec<String>,
    task: Json,
    trigger_schema: Json,
}

impl Defined {
    /// The hook's record with these bindings and trigger token; its next scheduled fire
    /// (after `now`) gets a new task id.
    fn into_record(
        self,
        bindings: Vec<HookBinding>,
        trigger_token: String,
        now: Timestamp,
    ) -> HookRecord {
        HookRecord {
            metadata: self.metadata,
            bindings,
            next_scheduled_date: hook::next_fire(&self.schedule, now),
            schedule: self.schedule,
            task: self.task,
            trigger_schema: self.trigger_schema,
            trigger_token,
            next_task_id: Slugid::nice(),
        }
    }
}

fn defined(call: &Call, group: &str, id: &str) -> Result<Defined, ApiError> {
    let input: HookInput = call.input(HOOK_SCHEMA)?;
    if input
        .hook_group_id
        .as_deref()
        .is_some_and(|given| given != group)
    {
        return Err(ApiError::input("Hook Group Ids do not match"));
    }
    if input.hook_id.as_deref().is_some_and(|given| given != id) {
        return Err(ApiError::input("Hook Ids do not match"));
    }
    let metadata = &input.metadata;
    if metadata.name.len() > 255 || metadata.owner.len() > 255 {
        return Err(schema_problem(
            "`metadata.name` and `metadata.owner` hold at most 255 characters",
        ));
    }
    if metadata.description.len() > 32_768 {
        return Err(schema_problem(
            "`metadata.description` holds at most 32768 characters",
        ));
    }
    if !metadata.owner.contains('@') {
        return Err(schema_problem("`metadata.owner` must be an email address"));
    }
    if !input.task.is_object() {
        return Err(schema_problem("`task` must be an object"));
    }
    let schedule = input.schedule.unwrap_or_default();
    for pattern in &schedule {
        hook::parse_cron(pattern).map_err(ApiError::input)?;
    }
    let trigger_schema = input
        .trigger_schema
        .unwrap_or_else(|| json!({"type": "object", "additionalProperties": false}));
    if !trigger_schema.is_object() {
        return Err(schema_problem("`triggerSchema` must be an object"));
    }
    jsonschema::validator_for(&trigger_schema).map_err(|error| {
        ApiError::input(format!("triggerSchema is not a valid JSON schema: {error}"))
    })?;
    let bindings: Option<Vec<HookBinding>> = input.bindings.map(|bindings| {
        bindings
            .into_iter()
            .map(|binding| HookBinding {
                exchange: binding.exchange,
                routing_key_pattern: binding.routing_key_pattern,
            })
            .collect()
    });
    for binding in bindings.iter().flatten() {
        if binding.exchange.is_empty() || binding.routing_key_pattern.is_empty() {
            return Err(schema_problem(
                "a binding's `exchange` and `routingKeyPattern` are not empty",
            ));
        }
        if let Err(problem) = Pattern::parse(&binding.routing_key_pattern) {
            return Err(ApiError::input(format!(
                "binding `{}`: {problem}",
                binding.exchange
            )));
        }
        if DENIED_EXCHANGES
            .iter()
            .any(|denied| binding.exchange.starts_with(denied))
        {
            return Err(ApiError::input(format!(
                "One or more of the exchanges below have been denied access to hooks: {}",
                binding.exchange
            )));
        }
    }
    check_template(&input.task)?;
    Ok(Defined {
        metadata: Json::from_value(&serde_json::to_value(metadata).unwrap_or_default()),
        bindings,
        schedule,
        task: Json::from_value(&input.task),
        trigger_schema: Json::from_value(&trigger_schema),
    })
}

/// Refuses a template JSON-e cannot read: rendered with a context like a trigger's, an error
/// of the template itself (an unknown operator, an operator's wrong argument, an expression
/// that does not parse) is the caller's; one about the context (a payload field the sample
/// lacks) is not.
fn check_template(task: &Value) -> Result<(), ApiError> {
    let context = hook::context(
        FiredBy::TriggerHook,
        Slugid::nice(),
        Timestamp::now(),
        Some(&json!({})),
        Some("sample"),
    );
    match hook::render(task, &context) {
        Err(text) => {
            // The interpreter's errors are about values (of the context); every other one
            // (a template error, an expression that does not parse) is about the template.
            if !text.starts_with("Interpreter Error") {
                return Err(ApiError::input(format!(
                    "the hook's task template is not valid JSON-e: {text}"
                )));
            }
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// `PUT /hooks/<hookGroupId>/<hookId>`.
async fn create_hook(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createHook", request, body)
        .answer(async |call| {
            let (group, id) = ids(call)?;
            let defined = defined(call, &group, &id)?;
            call.authorize_url(&state.access.clients(), &MODIFY_HOOK)?;
            let name = hook::hook_name(&group, &id);
            let bindings = defined.bindings.clone().unwrap_or_default();
            if let Ok(existing) = load(&state, &name).await {
                let same = existing.metadata == defined.metadata
                    && existing.bindings == bindings
                    && existing.schedule == defined.schedule
                    && existing.task == defined.task
                    && existing.trigger_schema == defined.trigger_schema;
                if same {
                    return Ok(response::json(
                        StatusCode::OK,
                        &definition_json(&group, &id, &existing),
                    ));
                }
                return Err(ApiError::new(
                    ErrorCode::RequestConflict,
                    format!("hook `{name}` already exists."),
                ));
            }
            let token = Slugid::nice().to_string();
            let given_bindings = defined.bindings.is_some();
            let record = defined.into_record(bindings, token, call.now);
            let mut reply = definition_json(&group, &id, &record);
            // As Taskcluster's: the request as defaulted, which has no `bindings` by default.
            if !given_bindings && let Value::Object(fields) = &mut reply {
                fields.remove("bindings");
            }
            let command = DocumentCommand::Create(Document::Hook(record));
            put(&state, &name, command, call.client_id()).await?;
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `POST /hooks/<hookGroupId>/<hookId>`: the trigger token stays; the next scheduled fire
/// gets a new task id and time.
async fn update_hook(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("updateHook", request, body)
        .answer(async |call| {
            let (group, id) = ids(call)?;
            let defined = defined(call, &group, &id)?;
            call.authorize_url(&state.access.clients(), &MODIFY_HOOK)?;
            let name = hook::hook_name(&group, &id);
            let existing = load(&state, &name).await?;
            let bindings = defined.bindings.clone().unwrap_or(existing.bindings);
            let record = defined.into_record(bindings, existing.trigger_token, call.now);
            let reply = definition_json(&group, &id, &record);
            let command = DocumentCommand::Put(Document::Hook(record));
            put(&state, &name, command, call.client_id()).await?;
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `DELETE /hooks/<hookGroupId>/<hookId>`: the hook and its fires; 200 whether or not it was
/// there.
async fn remove_hook(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("removeHook", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &REMOVE_HOOK)?;
            let (group, id) = ids(call)?;
            let name = hook::hook_name(&group, &id);
            put(&state, &name, DocumentCommand::Remove, call.client_id()).await?;
            let prefix =
                document::store_key(DocumentKind::LastFire, &document::last_fires_of(&name));
            loop {
                let (fires, _) = state
                    .engine
                    .documents(prefix.clone(), None, MAX_LIMIT)
                    .await?;
                if fires.is_empty() {
                    break;
                }
                for (fire, _) in fires {
                    state
                        .engine
                        .execute_document(
                            DocumentKind::LastFire,
                            &fire,
                            DocumentCommand::Remove,
                            call.client_id(),
                        )
                        .await?;
                }
            }
            Ok(response::json(StatusCode::OK, &json!({})))
        })
        .await
}

/// `GET /hooks/<hookGroupId>/<hookId>`.
async fn hook(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("hook", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_HOOK)?;
            let (group, id) = ids(call)?;
            let record = load(&state, &hook::hook_name(&group, &id)).await?;
            Ok(response::json(
                StatusCode::OK,
                &definition_json(&group, &id, &record),
            ))
        })
        .await
}

/// Every hook whose name starts with `prefix`, in name order.
async fn hooks_under(state: &State, prefix: &str) -> Result<Vec<(String, HookRecord)>, ApiError> {
    hooks(state, prefix, true).await
}

/// Every hook of the partitions this node serves: those its scheduler and binding listener
/// fire (another node fires the others).
async fn hooks_served_here(state: &State) -> Result<Vec<(String, HookRecord)>, ApiError> {
    hooks(state, "", false).await
}

async fn hooks(
    state: &State,
    prefix: &str,
    everywhere: bool,
) -> Result<Vec<(String, HookRecord)>, ApiError> {
    let prefix = document::store_key(DocumentKind::Hook, prefix);
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = if everywhere {
            let listed = state
                .engine
                .documents(prefix.clone(), after.take(), MAX_LIMIT);
            listed.await?
        } else {
            let listed =
                state
                    .engine
                    .documents_served_here(prefix.clone(), after.take(), MAX_LIMIT);
            listed.await?
        };
        if let Some((name, _)) = page.last() {
            after = Some(document::store_key(DocumentKind::Hook, name));
        }
        found.extend(page.into_iter().filter_map(|(name, found)| match found {
            Document::Hook(record) => Some((name, record)),
            _ => None,
        }));
        if !more {
            return Ok(found);
        }
    }
}

/// `GET /hooks/<hookGroupId>`: 404 for a group without hooks, as in Taskcluster.
async fn list_hooks(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listHooks", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_HOOKS)?;
            let group = call.param("hookGroupId").to_owned();
            if !hook::is_hook_group_id(&group) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequestArguments,
                    "Invalid URL parameter `hookGroupId`",
                ));
            }
            let hooks = hooks_under(&state, &format!("{group}/")).await?;
            if hooks.is_empty() {
                return Err(ApiError::not_found("No such group"));
            }
            let hooks: Vec<Value> = hooks
                .iter()
                .map(|(name, record)| {
                    let id = name.strip_prefix(&format!("{group}/")).unwrap_or(name);
                    definition_json(&group, id, record)
                })
                .collect();
            Ok(response::json(StatusCode::OK, &json!({ "hooks": hooks })))
        })
        .await
}

/// `GET /hooks`: the groups that have hooks.
async fn list_hook_groups(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listHookGroups", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_HOOK_GROUPS)?;
            let mut groups: Vec<String> = hooks_under(&state, "")
                .await?
                .into_iter()
                .filter_map(|(name, _)| name.split_once('/').map(|(group, _)| group.to_owned()))
                .collect();
            groups.dedup();
            Ok(response::json(StatusCode::OK, &json!({ "groups": groups })))
        })
        .await
}

/// The newest fires of a hook, after the fire named `after`.
async fn fires(
    state: &State,
    name: &str,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<(String, LastFire)>, bool), ApiError> {
    let kind = DocumentKind::LastFire;
    let prefix = document::store_key(kind, &document::last_fires_of(name));
    let after = after.map(|after| document::store_key(kind, &after));
    let (page, more) = state.engine.documents(prefix, after, limit).await?;
    let fires = page
        .into_iter()
        .filter_map(|(name, found)| match found {
            Document::LastFire(fire) => Some((name, fire)),
            _ => None,
        })
        .collect();
    Ok((fires, more))
}

/// `GET /hooks/<hookGroupId>/<hookId>/status` (deprecated).
async fn get_hook_status(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getHookStatus", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &HOOK_STATUS)?;
            let (group, id) = ids(call)?;
            let name = hook::hook_name(&group, &id);
            let record = load(&state, &name).await?;
            let (latest, _) = fires(&state, &name, None, 1).await?;
            let last_fire = match latest.first() {
                None => json!({"result": "no-fire"}),
                Some((_, fire)) => match &fire.error {
                    None => json!({"result": "success", "taskId": fire.task_id, "time": fire.task_create_time}),
                    Some(error) => json!({
                        "result": "error",
                        "error": serde_json::from_str::<Value>(error)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({"message": error})),
                        "time": fire.task_create_time,
                    }),
                },
            };
            let mut reply = json!({ "lastFire": last_fire });
            if let Some(next) = record.next_scheduled_date.filter(|_| !record.schedule.is_empty()) {
                reply["nextScheduledDate"] = json!(next);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /hooks/<hookGroupId>/<hookId>/last-fires`: newest first; 404 when there are none.
async fn list_last_fires(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listLastFires", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_LAST_FIRES)?;
            let (group, id) = ids(call)?;
            let page = call.page(MAX_LIMIT)?;
            let name = hook::hook_name(&group, &id);
            let (found, more) = fires(&state, &name, page.after.clone(), page.limit).await?;
            if found.is_empty() && page.after.is_none() {
                return Err(ApiError::not_found("No such hook or never fired"));
            }
            let states = found.iter().map(|(_, fire)| async {
                state
                    .engine
                    .task(fire.task_id)
                    .await
                    .and_then(|task| task.runs.last().map(|run| run.state))
                    .map_or_else(|| json!("unknown"), |run_state| json!(run_state))
            });
            let states = futures::future::join_all(states).await;
            let last_fires: Vec<Value> = found
                .iter()
                .zip(states)
                .map(|((_, fire), task_state)| {
                    json!({
                        "hookGroupId": group,
                        "hookId": id,
                        "firedBy": fire.fired_by,
                        "taskId": fire.task_id,
                        "taskCreateTime": fire.task_create_time,
                        "result": if fire.error.is_none() { "success" } else { "error" },
                        "taskState": task_state,
                        "error": fire.error.clone().unwrap_or_default(),
                    })
                })
                .collect();
            let mut reply = json!({ "lastFires": last_fires });
            let last = found.last().map(|(name, _)| name.as_str());
            if let Some(token) = pagination::token(last, more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /hooks/<hookGroupId>/<hookId>/token`.
async fn get_trigger_token(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getTriggerToken", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_TRIGGER_TOKEN)?;
            let (group, id) = ids(call)?;
            let record = load(&state, &hook::hook_name(&group, &id)).await?;
            Ok(response::json(
                StatusCode::OK,
                &json!({ "token": record.trigger_token }),
            ))
        })
        .await
}

/// `POST /hooks/<hookGroupId>/<hookId>/token`: a new token; the old one stops working.
async fn reset_trigger_token(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("resetTriggerToken", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RESET_TRIGGER_TOKEN)?;
            let (group, id) = ids(call)?;
            let name = hook::hook_name(&group, &id);
            let mut record = load(&state, &name).await?;
            record.trigger_token = Slugid::nice().to_string();
            let token = record.trigger_token.clone();
            put(
                &state,
                &name,
                DocumentCommand::Put(Document::Hook(record)),
                call.client_id(),
            )
            .await?;
            Ok(response::json(StatusCode::OK, &json!({ "token": token })))
        })
        .await
}

/// The payload of a trigger, checked against the hook's `triggerSchema`, and the task id it
/// asks for, if it does.
fn trigger_payload(call: &Call, record: &HookRecord) -> Result<(Value, Option<Slugid>), ApiError> {
    let payload = call.json_payload().unwrap_or_else(|_| json!({}));
    if !payload.is_object() {
        return Err(ApiError::new(
            ErrorCode::InputValidationError,
            "the request does not match v1/trigger-hook.json: the payload must be an object",
        ));
    }
    check_payload(record, &payload)?;
    let task_id = match payload.get("taskId") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .and_then(|text| text.parse::<Slugid>().ok())
                .ok_or_else(|| ApiError::input(format!("Invalid taskId format: {value}")))?,
        ),
    };
    Ok((payload, task_id))
}

/// Checks a fire's payload against the hook's `triggerSchema`.
fn check_payload(record: &HookRecord, payload: &Value) -> Result<(), ApiError> {
    let schema = record.trigger_schema.to_value();
    let validator = jsonschema::validator_for(&schema).map_err(|error| {
        ApiError::input(format!(
            "the hook's triggerSchema does not compile: {error}"
        ))
    })?;
    let problems: Vec<String> = validator
        .iter_errors(payload)
        .map(|error| {
            let place = error.instance_path().to_string();
            format!("payload{place}: {error}")
        })
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::input(problems.join("; ")));
    }
    Ok(())
}

/// The reply of a trigger: the task, or `{}` when the template declined to make one.
fn trigger_reply(task_id: Option<Slugid>) -> HttpResponse {
    let reply = match task_id {
        Some(task_id) => json!({"taskId": task_id, "status": {"taskId": task_id}}),
        None => json!({}),
    };
    response::json(StatusCode::OK, &reply)
}

/// `POST /hooks/<hookGroupId>/<hookId>/trigger`.
async fn trigger_hook(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("triggerHook", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &TRIGGER_HOOK)?;
            let (group, id) = ids(call)?;
            let record = load(&state, &hook::hook_name(&group, &id)).await?;
            let (payload, task_id) = trigger_payload(call, &record)?;
            let fire = Fire {
                group: &group,
                id: &id,
                fired_by: FiredBy::TriggerHook,
                task_id: task_id.unwrap_or_else(Slugid::nice),
                now: call.now,
                payload: Some(&payload),
                client_id: call.client_id(),
            };
            let created = fire.run(&state, &record).await?;
            Ok(trigger_reply(created))
        })
        .await
}

/// `POST /hooks/<hookGroupId>/<hookId>/trigger/<token>`: the token is the credential.
async fn trigger_hook_with_token(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("triggerHookWithToken", request, body)
        .answer(async |call| {
            let (group, id) = ids(call)?;
            let record = load(&state, &hook::hook_name(&group, &id)).await?;
            if !crate::auth::encoding::constant_time_eq(call.param("token"), &record.trigger_token)
            {
                return Err(ApiError::new(
                    ErrorCode::AuthenticationFailed,
                    "invalid hook token",
                ));
            }
            let (payload, task_id) = trigger_payload(call, &record)?;
            let fire = Fire {
                group: &group,
                id: &id,
                fired_by: FiredBy::TriggerHookWithToken,
                task_id: task_id.unwrap_or_else(Slugid::nice),
                now: call.now,
                payload: Some(&payload),
                client_id: None,
            };
            let created = fire.run(&state, &record).await?;
            Ok(trigger_reply(created))
        })
        .await
}

/// One fire of a hook.
struct Fire<'a> {
    group: &'a str,
    id: &'a str,
    fired_by: FiredBy,
    task_id: Slugid,
    /// The fire's time: `now` in the template, and the task's `created` by default.
    now: Timestamp,
    payload: Option<&'a Value>,
    client_id: Option<String>,
}

impl Fire<'_> {
    /// Renders the template and creates the task as the hook's role; records the fire unless
    /// the template declined (rendered to nothing). The task's id, or `None` if declined.
    async fn run(&self, state: &State, record: &HookRecord) -> Result<Option<Slugid>, ApiError> {
        let context = hook::context(
            self.fired_by,
            self.task_id,
            self.now,
            self.payload,
            self.client_id.as_deref(),
        );
        let rendered = match hook::render(&record.task.to_value(), &context) {
            Ok(rendered) => rendered,
            Err(error) => {
                self.record(state, Some(error.clone())).await?;
                return Err(ApiError::input(format!("While firing hook:\n\n{error}")));
            }
        };
        if matches!(rendered, Value::Null | Value::Bool(false)) {
            return Ok(None);
        }
        let task = hook::with_defaults(rendered, self.task_id, self.now);
        let text = serde_json::to_vec(&task).unwrap_or_default();
        let role = format!("hook-id:{}", hook::hook_name(self.group, self.id));
        let clients = state.access.clients();
        let scopes = clients.roles().expand(&ScopeSet::new([
            format!("assume:{role}"),
            "assume:anonymous".to_owned(),
        ]));
        let authenticated = Authenticated {
            client_id: Some(HOOKS_CLIENT_ID.to_owned()),
            scopes,
            expires: None,
            scheme: auth::Scheme::None,
        };
        let created = create_task_from(state, self.task_id, &text, self.now, |required, params| {
            auth::authorize(&authenticated, required, params)?;
            Ok(Some(HOOKS_CLIENT_ID.to_owned()))
        })
        .await;
        match created {
            Ok(_) => {
                self.record(state, None).await?;
                Ok(Some(self.task_id))
            }
            Err(error) => {
                let recorded = json!({
                    "name": error.code.to_string(),
                    "code": error.code.to_string(),
                    "statusCode": error.status(),
                    "message": error.message,
                });
                let mut text = serde_json::to_string_pretty(&recorded).unwrap_or_default();
                text.truncate(MAX_FIRE_ERROR);
                self.record(state, Some(text)).await?;
                Err(match error.code {
                    ErrorCode::InsufficientScopes => ApiError::new(
                        ErrorCode::InsufficientScopes,
                        format!(
                            "The role `{role}` does not have sufficient scopes to create the task:\n\n{}",
                            error.message
                        ),
                    ),
                    code if error.status() >= 500 => ApiError::new(code, error.message),
                    code => ApiError::input(format!(
                        "While calling createTask: {code}\n\n{}",
                        error.message
                    )),
                })
            }
        }
    }

    /// Records the fire (a scheduled fire repeated after a crash records the same one).
    async fn record(&self, state: &State, error: Option<String>) -> Result<(), ApiError> {
        let hook = hook::hook_name(self.group, self.id);
        let fire = LastFire {
            fired_by: self.fired_by.name().to_owned(),
            task_id: self.task_id,
            task_create_time: self.now,
            error,
        };
        let name = document::last_fire_name(&hook, self.now, self.task_id);
        state
            .engine
            .execute_document(
                DocumentKind::LastFire,
                &name,
                DocumentCommand::Put(Document::LastFire(fire)),
                None,
            )
            .await?;
        Ok(())
    }
}

/// Fires the hooks whose schedule has come, every [`SCHEDULER_TICK`], for as long as the
/// server runs: each hook of a partition this node serves, with the task id and time its
/// record chose in advance; then moves the record to its next fire. A fire that fails for a
/// reason on this side (a 5xx) is tried again at the next tick; any other failure is recorded
/// as the fire's error and the schedule moves on, as in Taskcluster.
pub fn start_scheduler(state: Data<State>) {
    actix::spawn(async move {
        let mut tick = actix::clock::interval(SCHEDULER_TICK);
        loop {
            tick.tick().await;
            if let Err(error) = fire_due(&state).await {
                tracing::warn!(message = %error.message, "the hook scheduler could not look for due hooks");
            }
        }
    });
}

async fn fire_due(state: &State) -> Result<(), ApiError> {
    let now = Timestamp::now();
    for (name, record) in hooks_served_here(state).await? {
        let Some(due) = record.next_scheduled_date.filter(|due| *due <= now) else {
            continue;
        };
        let Some((group, id)) = name.split_once('/') else {
            continue;
        };
        let fire = Fire {
            group,
            id,
            fired_by: FiredBy::Schedule,
            task_id: record.next_task_id,
            now: due,
            payload: None,
            client_id: None,
        };
        if let Err(error) = fire.run(state, &record).await {
            if error.status() >= 500 {
                continue;
            }
            tracing::info!(hook = %name, message = %error.message, "a scheduled fire failed");
        }
        // Moved on unless the hook changed meanwhile (an update chose its next fire itself).
        let mut next = load(state, &name).await?;
        if next.next_task_id == record.next_task_id {
            next.next_task_id = Slugid::nice();
            next.next_scheduled_date = hook::next_fire(&next.schedule, now);
            put(
                state,
                &name,
                DocumentCommand::Put(Document::Hook(next)),
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// Fires hooks whose `bindings` match the exchange messages this node's listeners hear, for as
/// long as the server runs: each hook of a partition this node serves (so a cluster fires it
/// once), with the message's body as the payload (a payload its `triggerSchema` refuses fires
/// nothing) and a new task id, as Taskcluster's hooks do with Pulse messages.
pub fn start_binding_listener(state: Data<State>) {
    actix::spawn(async move {
        let Ok(mut subscription) = state.engine.bus().subscribe(None) else {
            return;
        };
        // Read again when a hook changed (here or on another node), and now and then.
        let changed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let heard = changed.clone();
        state
            .engine
            .watch_documents(std::sync::Arc::new(move |kind, _, _| {
                if kind == DocumentKind::Hook {
                    heard.store(true, std::sync::atomic::Ordering::Release);
                }
            }));
        let mut bound: Vec<(String, HookRecord, Vec<Binding>)> = Vec::new();
        let mut refreshed = tokio::time::Instant::now();
        loop {
            let batch = tokio::select! {
                received = subscription.receiver.recv() => match received {
                    Ok(batch) => batch,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "hook bindings fell behind the exchanges; messages were missed");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = subscription.closing.changed() => return,
            };
            if changed.swap(false, std::sync::atomic::Ordering::AcqRel)
                || refreshed.elapsed() >= BINDINGS_REFRESH
            {
                refreshed = tokio::time::Instant::now();
                match bound_hooks(&state).await {
                    Ok(hooks) => bound = hooks,
                    Err(error) => {
                        tracing::warn!(message = %error.message, "reading the hooks' bindings")
                    }
                }
            }
            for published in batch.messages.iter() {
                let message = &published.message;
                for (name, record, bindings) in &bound {
                    if !message.matches_any(bindings) {
                        continue;
                    }
                    let Ok(payload) = serde_json::from_str::<Value>(message.body().get()) else {
                        continue;
                    };
                    if check_payload(record, &payload).is_err() {
                        tracing::info!(hook = %name, "a message the hook's triggerSchema refuses fires nothing");
                        continue;
                    }
                    let Some((group, id)) = name.split_once('/') else {
                        continue;
                    };
                    let fire = Fire {
                        group,
                        id,
                        fired_by: FiredBy::PulseMessage,
                        task_id: Slugid::nice(),
                        now: Timestamp::now(),
                        payload: Some(&payload),
                        client_id: None,
                    };
                    if let Err(error) = fire.run(&state, record).await {
                        tracing::info!(hook = %name, message = %error.message, "a fire by a message failed");
                    }
                }
            }
        }
    });
}

/// The hooks of the partitions this node serves that have bindings to exchanges of its own.
async fn bound_hooks(state: &State) -> Result<Vec<(String, HookRecord, Vec<Binding>)>, ApiError> {
    Ok(hooks_served_here(state)
        .await?
        .into_iter()
        .filter_map(|(name, record)| {
            let bindings: Vec<Binding> = record
                .bindings
                .iter()
                .filter_map(|binding| {
                    Binding::parse(&binding.exchange, &binding.routing_key_pattern).ok()
                })
                .collect();
            (!bindings.is_empty()).then_some((name, record, bindings))
        })
        .collect())
}
