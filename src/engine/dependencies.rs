//! The dependency resolver: which tasks wait on which. When a task reaches a final resolution
//! its shard tells the resolver, which sends `SatisfyDependency` to each dependent's shard.
//! Its map is derived from state (rebuilt by the shards after replay), never stored.

use std::collections::HashMap;

use actix::prelude::*;

use super::Engine;
use super::task::{Command, ResolvedDependency};
use crate::model::Slugid;

#[derive(Default)]
pub struct DependencyResolver {
    dependents: HashMap<Slugid, Vec<Slugid>>,
    /// Set once the shards exist; messages before that only register.
    engine: Option<Engine>,
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
        for dependency in message.dependencies {
            self.dependents
                .entry(dependency)
                .or_default()
                .push(message.dependent);
        }
    }
}

/// A task reached a final resolution.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resolved(pub ResolvedDependency);

impl Handler<Resolved> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Resolved(resolved): Resolved, _: &mut Context<Self>) {
        let (Some(engine), Some(dependents)) =
            (&self.engine, self.dependents.remove(&resolved.task_id))
        else {
            return;
        };
        for dependent in dependents {
            // Fire and forget: the shard decides (idempotently) and persists.
            engine.notify(dependent, Command::SatisfyDependency(resolved));
        }
    }
}

/// A task expired: nothing will wait for it any more (a task that depends on it now would be
/// refused, as one that depends on a task that never existed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Slugid);

impl Handler<Forget> for DependencyResolver {
    type Result = ();

    fn handle(&mut self, Forget(task_id): Forget, _: &mut Context<Self>) {
        self.dependents.remove(&task_id);
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
