//! How many rooms, peers, transports, producers and consumers exist right now. Each object owns
//! a [`Counted`] guard: the count goes up when the guard is made and down when it is dropped,
//! whichever way the object ends (closed, dropped, its task cancelled). Sinks read the counts
//! when they report (a scrape, a systemd STATUS line), so no queue sits between the objects and
//! the numbers, and none can be lost.

use std::sync::{Arc, Mutex, MutexGuard};

use mediasoup::prelude::MediaKind;

use super::Direction;

/// One kind of object the census counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Room { worker: usize },
    Peer,
    Transport { direction: Direction, worker: usize },
    Producer(MediaKind),
    Consumer(MediaKind),
}

/// Per-worker counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub rooms: usize,
    pub transports: usize,
}

/// The counts at one moment, consistent with each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub rooms: usize,
    pub peers: usize,
    /// By [`Direction`]: send, recv.
    transports: [usize; 2],
    /// By [`MediaKind`]: audio, video.
    producers: [usize; 2],
    consumers: [usize; 2],
    /// By worker index; a worker that never held anything may be missing (all zero).
    workers: Vec<WorkerCounts>,
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl Counts {
    pub fn transports(&self, direction: Direction) -> usize {
        self.transports[direction_index(direction)]
    }

    pub fn producers(&self, kind: MediaKind) -> usize {
        self.producers[kind_index(kind)]
    }

    pub fn consumers(&self, kind: MediaKind) -> usize {
        self.consumers[kind_index(kind)]
    }

    pub fn worker(&self, index: usize) -> WorkerCounts {
        self.workers.get(index).copied().unwrap_or_default()
    }

    fn worker_mut(&mut self, index: usize) -> &mut WorkerCounts {
        if self.workers.len() <= index {
            self.workers.resize(index + 1, WorkerCounts::default());
        }
        &mut self.workers[index]
    }

    /// Adds one `object` (`up`) or takes one away. Every decrement follows its own increment
    /// (both come from one guard), so no count goes below zero.
    fn change(&mut self, object: Object, up: bool) {
        let apply = |count: &mut usize| {
            if up {
                *count += 1;
            } else {
                *count -= 1;
            }
        };
        match object {
            Object::Room { worker } => {
                apply(&mut self.rooms);
                apply(&mut self.worker_mut(worker).rooms);
            }
            Object::Peer => apply(&mut self.peers),
            Object::Transport { direction, worker } => {
                apply(&mut self.transports[direction_index(direction)]);
                apply(&mut self.worker_mut(worker).transports);
            }
            Object::Producer(kind) => apply(&mut self.producers[kind_index(kind)]),
            Object::Consumer(kind) => apply(&mut self.consumers[kind_index(kind)]),
        }
    }
}

/// Cheap to clone; all clones share the same counts.
#[derive(Clone, Default)]
pub struct Census {
    counts: Arc<Mutex<Counts>>,
}

impl Census {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `object` until the returned guard is dropped.
    pub fn count(&self, object: Object) -> Counted {
        self.counts().change(object, true);
        Counted {
            census: self.clone(),
            object,
        }
    }

    pub fn now(&self) -> Counts {
        self.counts().clone()
    }
}

/// Keeps one object counted; owned by the object (or by its close handler).
#[must_use = "the object is counted only while the guard lives"]
pub struct Counted {
    census: Census,
    object: Object,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.census.counts().change(self.object, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_lasts_as_long_as_its_guard() {
        let census = Census::default();
        let room = census.count(Object::Room { worker: 2 });
        let send = census.count(Object::Transport {
            direction: Direction::Send,
            worker: 2,
        });
        let video = census.count(Object::Producer(MediaKind::Video));
        let counts = census.now();
        assert_eq!(counts.rooms, 1);
        assert_eq!(counts.transports(Direction::Send), 1);
        assert_eq!(counts.transports(Direction::Recv), 0);
        assert_eq!(counts.producers(MediaKind::Video), 1);
        assert_eq!(counts.producers(MediaKind::Audio), 0);
        assert_eq!(
            counts.worker(2),
            WorkerCounts {
                rooms: 1,
                transports: 1
            }
        );
        assert_eq!(counts.worker(0), WorkerCounts::default());
        assert_eq!(counts.worker(7), WorkerCounts::default());

        drop((room, send, video));
        let counts = census.now();
        assert_eq!(counts.rooms, 0);
        assert_eq!(counts.worker(2), WorkerCounts::default());
        assert_eq!(counts.producers(MediaKind::Video), 0);
    }
}
