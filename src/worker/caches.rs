//! Named caches of the Docker engine (`payload.cache`): host directories bind-mounted into
//! task containers, kept across tasks. A name has any number of instances; a running task gets
//! one to itself (the most recently used free one, else a new empty one), so two concurrent
//! tasks never share a cache directory. `onExitStatus.purgeCaches` deletes the instances a task
//! used once it is done with them. Instances live under `<worker data dir>/caches/<name>/<n>`
//! and survive worker restarts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug)]
struct Instance {
    number: u64,
    in_use: bool,
    /// Order of last release; the highest is the warmest.
    last_used: u64,
}

pub struct Caches {
    dir: PathBuf,
    instances: RefCell<HashMap<String, Vec<Instance>>>,
    clock: RefCell<u64>,
}

/// One cache instance, held by one running task.
#[derive(Debug)]
pub struct Lease {
    pub name: String,
    pub number: u64,
    pub path: PathBuf,
}

impl Caches {
    /// Finds the instances earlier runs of the worker left.
    pub fn open(dir: &Path) -> std::io::Result<Caches> {
        std::fs::create_dir_all(dir)?;
        let mut instances: HashMap<String, Vec<Instance>> = HashMap::new();
        for name in std::fs::read_dir(dir)? {
            let name = name?;
            let Ok(cache) = name.file_name().into_string() else {
                continue;
            };
            for instance in std::fs::read_dir(name.path())? {
                let instance = instance?;
                if let Some(number) = instance
                    .file_name()
                    .to_str()
                    .and_then(|text| text.parse().ok())
                {
                    instances.entry(cache.clone()).or_default().push(Instance {
                        number,
                        in_use: false,
                        last_used: number,
                    });
                }
            }
        }
        let clock = instances
            .values()
            .flatten()
            .map(|instance| instance.last_used)
            .max()
            .unwrap_or(0);
        Ok(Caches {
            dir: dir.to_owned(),
            instances: RefCell::new(instances),
            clock: RefCell::new(clock),
        })
    }

    fn tick(&self) -> u64 {
        let mut clock = self.clock.borrow_mut();
        *clock += 1;
        *clock
    }

    fn path(&self, name: &str, number: u64) -> PathBuf {
        self.dir.join(name).join(number.to_string())
    }

    /// A free instance of `name` (the warmest), or a new one; `fresh` says which.
    pub fn acquire(&self, name: &str) -> std::io::Result<(Lease, bool)> {
        let mut instances = self.instances.borrow_mut();
        let list = instances.entry(name.to_owned()).or_default();
        let warmest = list
            .iter_mut()
            .filter(|instance| !instance.in_use)
            .max_by_key(|instance| instance.last_used);
        let (number, fresh) = match warmest {
            Some(instance) => {
                instance.in_use = true;
                (instance.number, false)
            }
            None => {
                let number = self.tick();
                std::fs::create_dir_all(self.path(name, number))?;
                list.push(Instance {
                    number,
                    in_use: true,
                    last_used: number,
                });
                (number, true)
            }
        };
        Ok((
            Lease {
                name: name.to_owned(),
                number,
                path: self.path(name, number),
            },
            fresh,
        ))
    }

    /// Gives the instance back; `purge` deletes it instead.
    pub fn release(&self, lease: Lease, purge: bool) {
        let stamp = self.tick();
        let mut instances = self.instances.borrow_mut();
        let Some(list) = instances.get_mut(&lease.name) else {
            return;
        };
        if purge {
            list.retain(|instance| instance.number != lease.number);
            if let Err(error) = std::fs::remove_dir_all(&lease.path) {
                tracing::warn!(cache = lease.name, %error, "purging a cache instance");
            }
        } else if let Some(instance) = list.iter_mut().find(|i| i.number == lease.number) {
            instance.in_use = false;
            instance.last_used = stamp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_exclusive_reused_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let caches = Caches::open(dir.path()).unwrap();
        let (first, fresh) = caches.acquire("cargo").unwrap();
        assert!(fresh);
        let (second, fresh) = caches.acquire("cargo").unwrap();
        assert!(fresh, "a cache in use is never shared");
        assert_ne!(first.path, second.path);
        std::fs::write(first.path.join("marker"), "x").unwrap();
        let first_path = first.path.clone();
        caches.release(first, false);
        caches.release(second, true);
        let (again, fresh) = caches.acquire("cargo").unwrap();
        assert!(!fresh);
        assert_eq!(again.path, first_path);
        assert!(again.path.join("marker").exists());
        caches.release(again, false);

        // A restarted worker finds the instance again.
        let reopened = Caches::open(dir.path()).unwrap();
        let (found, fresh) = reopened.acquire("cargo").unwrap();
        assert!(!fresh);
        assert!(found.path.join("marker").exists());
    }
}
