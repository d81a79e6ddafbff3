//! The dependency resolver: which tasks wait on which. Each time a task reaches a final
//! resolution its shard tells the resolver, which sends `SatisfyDependency` to each dependent's
//! shard. Its maps are derived from state (rebuilt by the shards after replay), never stored.
//!
//! With several nodes, each resolver knows the dependents of its own node's partitions: a
//! resolution is also told to every other node (`Engine::share_resolution`, batched), whose
//! resolver satisfies its own dependents of it; a node that takes a partition over looks at
//! every dependency its waiting tasks still wait for.
//!
//! A dependent keeps its edges until it no longer waits: a resolution that does not satisfy it
//! (a failure, for `all-completed`) may be followed by one that does (the dependency rerun and
//! completed), as in Taskcluster. What the dependent's shard answers tells whether it still
//! waits; one scheduled, resolved (canceled, past its deadline) or expired waits no more.

use std::collections::{HashMap, HashSet};

use actix::prelude::*;

use super::Engine;
use crate::model::ErrorCode;
use crate::model::Slugid;
use crate::model::task::{Command, ResolvedDependency};

#[derive(Default)]
pub struct DependencyResolver {
    /// For each dependency, the tasks that wait on it.
    dependents: HashMap<Slugid, HashSet<Slugid>>,
    /// For each waiting task, the dependencies it was registered with, so that all of its
    /// edges go once it no longer waits.
    dependencies: HashMap<Slugid, Vec<Slugid>>,
    /// Set once the shards exist; messages before that only register.
    engine: Option<Engine>,
}

impl DependencyResolver {
    /// Drops every edge of `dependent`.
    fn settle(&mut self, dependent: Slugid) {
        for dependency in self.dependencies.remove(&dependent).unwrap_or_default() {
            if let Some(waiting) = self.dependents.get_mut(&dependency) {
                waiting.remove(&dependent);
                if waiting.is_empty() {
                    self.dependents.remove(&dependency);
                }
            }
        }
    }
}

impl Actor for DependencyResolver {
    type Context = Context<Self>;
}

/// `dependent` waits for `dependencies` (those not yet satisfied).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub dependent: Slugid,
    pub dependencies: Vec<Slugid>,
}

impl Handler<Register> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, message: Register, _: &mut Context<Self>) {
        for &dependency in &message.dependencies {
            self.dependents
                .entry(dependency)
                .or_default()
                .insert(message.dependent);
        }
        self.dependencies
            .entry(message.dependent)
            .or_default()
            .extend(message.dependencies);
    }
}

/// A task reached a final resolution.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resolved(pub ResolvedDependency);

impl Handler<Resolved> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Resolved(resolved): Resolved, context: &mut Context<Self>) {
        if let Some(engine) = &self.engine {
            engine.share_resolution(resolved);
        }
        self.satisfy(resolved, context);
    }
}

/// Tasks of other nodes' partitions reached final resolutions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResolvedElsewhere(pub Vec<ResolvedDependency>);

impl Handler<ResolvedElsewhere> for DependencyResolver {
    type Result = ();

    fn handle(
        &mut self,
        ResolvedElsewhere(resolved): ResolvedElsewhere,
        context: &mut Context<Self>,
    ) {
        for resolved in resolved {
            self.satisfy(resolved, context);
        }
    }
}

impl DependencyResolver {
    /// Tells every dependent of `resolved` registered here.
    fn satisfy(&mut self, resolved: ResolvedDependency, context: &mut Context<Self>) {
        let (Some(engine), Some(dependents)) =
            (&self.engine, self.dependents.get(&resolved.task_id))
        else {
            return;
        };
        for &dependent in dependents {
            let (engine, resolver) = (engine.clone(), context.address());
            actix::spawn(async move {
                // The shard decides (idempotently) and persists; its answer says whether the
                // dependent still waits.
                let command = Command::SatisfyDependency(resolved);
                let waits_no_more = match engine.execute(dependent, command, None).await {
                    Ok(task) => !task.runs.is_empty(),
                    Err(error) => error.code == ErrorCode::ResourceNotFound,
                };
                if waits_no_more {
                    resolver.do_send(Settled(dependent));
                }
            });
        }
    }
}

/// The task no longer waits for its dependencies.
#[derive(Message)]
#[rtype(result = "()")]
struct Settled(Slugid);

impl Handler<Settled> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Settled(dependent): Settled, _: &mut Context<Self>) {
        self.settle(dependent);
    }
}

/// A task expired: nothing will wait for it any more (a task that depends on it now would be
/// refused, as one that depends on a task that never existed), and it waits for nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Slugid);

impl Handler<Forget> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Forget(task_id): Forget, _: &mut Context<Self>) {
        self.dependents.remove(&task_id);
        self.settle(task_id);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Engine);

impl Handler<Attach> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Attach(engine): Attach, _: &mut Context<Self>) {
        self.engine = Some(engine);
    }
}
