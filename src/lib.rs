//! Taskfold: a task-execution platform whose state is an append-only event log folded into
//! actors. See `DESIGN.md` in the shared project notes for the picture; this crate holds the
//! model (pure types), the log (embedded segments or Kafka), the engine, the API, the worker
//! and the projections.
//!
//! ## Layers
//!
//! Each part imports only from the parts below it, so that shared vocabulary lives below all
//! of its users (`tests/layers.rs` checks every path in `src/`):
//!
//! - at the bottom, the vocabulary: [`model`] (with the error table, exchange names and
//!   bindings, the services' documents), [`auth`], [`log`], [`metrics`] (every metric's definition) and [`blobs`]
//!   (where blobs live: files or an S3-compatible store). None of them imports from the parts above. Each entity of the model
//!   (`model::task`, `model::group`, `model::worker`) is one home for its definition, folded
//!   state, pure `decide` and `apply`.
//! - [`engine`], the actors that carry those decisions out (decide → append → apply → reply),
//!   and the [`projections`] it runs (exchange messages, the listener bus, the Kafka exchange
//!   topics, the AMQP exchanges of a Pulse broker); neither imports the API, the worker or the
//!   CLI.
//! - [`api`], which serves the engine over HTTP and renders what listeners receive.
//! - [`worker`] and [`client`], which reach the queue over HTTP only: they import nothing from
//!   the engine, the API, the projections or the log.
//!
//! [`settings`] reads the configuration into the types each part defines (the log's are
//! [`log::Settings`]); `main`, [`local`] and [`bench`] put the parts together.
//!
//! ## State beyond memory
//!
//! The log is the source of truth; each partition's folded state lives in an embedded disk
//! store (`engine::store`, fjall), so retained history costs disk, not memory. A shard keeps
//! in memory only live work (unresolved tasks, their timers and pending hints, the workers)
//! and what changed since its last write to the store (`engine::shard::state`). It writes the
//! store in atomic batches that carry the log offset they reflect, only once those events are
//! durable, so the store lags the log and never runs ahead of it; a start opens the store and
//! replays the log after its offset (`engine::shard::replay`), rebuilding a store that is
//! missing or damaged from the whole log.
//!
//! ## The services beside the queue
//!
//! Auth, Secrets, Index and Hooks (`api::services`) keep documents (`model::document`: a
//! client, a role, a secret, an index entry, a hook, a hook's fire), entities of the log like
//! tasks: each change is an event of
//! the document's partition, applied by that partition's shard and written to its store, so
//! the same durability, replay and forwarding hold. Lists ask every partition and merge. Clients
//! and roles are also kept whole, in memory, in the one table every request of every service is
//! authenticated against (`api::access`); a change reaches this node's table and every other
//! node's before its call answers. A hook fires on the node that serves its partition (its
//! schedule, its bindings), creating its task through the queue's own checks as the hook's
//! role. taskcluster-proxy (`worker::proxy`) is the worker's: it reaches the services over
//! HTTP like the rest of the worker.
//!
//! ## The web console
//!
//! The pages at `<rootUrl>/` (`api::console`) are one page application in `web/` (Preact,
//! xterm.js, bundled by esbuild), built by `build.rs` and embedded in the binary. It is an
//! API client like any other: it reads anonymously or signs with Hawk in the browser, follows
//! live logs through the queue's live-log route and task groups through the event listeners
//! (server-sent events), and holds nothing the server must keep. Its home page's recent groups
//! come from the group trackers (`listRecentTaskGroups`): groups with unresolved tasks, then
//! each node's last hundred resolved since it started.
//!
//! ## Several nodes
//!
//! With the Kafka log, `taskfold serve --node-id ID --advertise URL` joins a cluster of nodes
//! sharing one topic (`engine::cluster`). A Kafka consumer group over the log topic, with
//! cooperative rebalancing, gives each partition to one node at a time; a node that gains a
//! partition takes its log writer, catches its store up from the log (its own store if it
//! has one, else from the log's start) and only then serves it; one that loses a partition
//! stops its shard at once. Any node answers any call: one about another node's entity is
//! forwarded to the owner (`engine::cluster::peer`, authenticated by the cluster's secret;
//! Hawk is checked once, where the client came in), claimWork waits on every node's pending
//! work, and listeners hear every partition from the exchange topics.
//!
//! **Fencing, and why a transaction is only the fence.** Each partition's writer is a
//! transactional producer whose `transactional.id` names the partition
//! (`log::kafka::writer`), so a new owner's `init_transactions` aborts what the old owner left
//! open and makes the broker refuse the old owner's every later record: a node that was
//! paused or cut off and wakes up believing it still owns a partition cannot get an event
//! appended, and so cannot hand a run to a second worker. Kafka Streams uses the same fence
//! but acknowledges only at a transaction's commit, which costs a commit round trip per
//! request; Taskfold acknowledges once `acks=all` holds, reads the log `read_uncommitted` so
//! that records of a transaction aborted by fencing stay in the log, and commits every few
//! seconds only to bound the transaction (its marker's one offset is counted by the shard).
//! The alternative, an epoch every record carries and every reader checks, was set aside: a
//! fenced writer's records would still land, interleave with the new owner's and shift the
//! offsets the new owner's state is keyed by, and every reader (replay, repair, inspection)
//! would have to know the rule.
//!
//! ## What is never lost
//!
//! - No call is answered before its events are durable: the embedded log replies after the
//!   group commit's `fdatasync`, Kafka after `acks=all` (`engine::shard`).
//! - Opening the embedded log cuts only a torn tail, bytes that no valid record follows. Damage
//!   that a valid record follows refuses the start and changes nothing; `taskfold log repair`
//!   keeps the records before it and copies the rest aside (`log::embedded::recovery`).
//! - A failed append (or store write) is crash-only: from then on nothing answers from the
//!   state in memory, and the server exits so that a restart replays what the log holds
//!   (`engine::health`).
//! - Log retention (`[log] retention_hours`) deletes only segments wholly below a store's
//!   offset after syncing that store; a start that would need deleted records refuses.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod bench;
pub mod blobs;
pub mod client;
pub mod engine;
pub mod local;
pub mod log;
pub mod metrics;
pub mod model;
pub mod projections;
pub mod settings;
pub mod worker;
