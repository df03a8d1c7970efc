//! Shared health state: what `/readyz` reports and what gates the systemd watchdog.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A worker counts as answering when its last successful probe is at most this old.
pub const PROBE_FRESHNESS: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub struct WorkerHealth {
    pub alive: bool,
    /// The last probe answered within its deadline.
    pub answering: bool,
    last_ok: Option<Instant>,
}

/// Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Health {
    workers: Arc<Mutex<Vec<WorkerHealth>>>,
    listeners_bound: Arc<AtomicBool>,
}

/// One failing readiness check, as `/readyz` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailingCheck {
    pub check: String,
    pub detail: String,
}

impl Health {
    pub fn new(workers: usize) -> Self {
        let worker = WorkerHealth {
            alive: true,
            answering: true,
            last_ok: Some(Instant::now()),
        };
        Health {
            workers: Arc::new(Mutex::new(vec![worker; workers])),
            listeners_bound: Arc::new(AtomicBool::new(false)),
        }
    }

    fn with_worker(&self, index: usize, update: impl FnOnce(&mut WorkerHealth)) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(worker) = workers.get_mut(index) {
            update(worker);
        }
    }

    pub fn worker_died(&self, index: usize) {
        self.with_worker(index, |w| w.alive = false);
    }

    pub fn probe_result(&self, index: usize, ok: bool) {
        self.with_worker(index, |w| {
            w.answering = ok;
            if ok {
                w.last_ok = Some(Instant::now());
            }
        });
    }

    /// Worker `index`'s state now (`None` for an index out of range).
    pub fn worker(&self, index: usize) -> Option<WorkerHealth> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.get(index).copied()
    }

    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::SeqCst);
    }

    /// Every worker is alive (for `/healthz`).
    pub fn workers_alive(&self) -> bool {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.iter().all(|w| w.alive)
    }

    pub fn alive_count(&self) -> usize {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.iter().filter(|w| w.alive).count()
    }

    /// The checks that fail now; empty means ready.
    pub fn failing_checks(&self) -> Vec<FailingCheck> {
        let mut failing = Vec::new();
        if !self.listeners_bound.load(Ordering::SeqCst) {
            failing.push(FailingCheck {
                check: "listeners".into(),
                detail: "not bound yet".into(),
            });
        }
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for (index, worker) in workers.iter().enumerate() {
            let fresh = worker
                .last_ok
                .is_some_and(|at| at.elapsed() <= PROBE_FRESHNESS);
            let detail = if !worker.alive {
                "died"
            } else if !worker.answering {
                "did not answer its last health probe in time"
            } else if !fresh {
                "no successful health probe recently"
            } else {
                continue;
            };
            failing.push(FailingCheck {
                check: format!("worker {index}"),
                detail: detail.into(),
            });
        }
        failing
    }

    pub fn is_ready(&self) -> bool {
        self.failing_checks().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_listeners_and_answering_workers() {
        let health = Health::new(2);
        assert_eq!(health.failing_checks()[0].check, "listeners");
        health.set_listeners_bound();
        assert!(health.is_ready());

        health.probe_result(1, false);
        let failing = health.failing_checks();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].check, "worker 1");
        assert!(health.workers_alive());

        health.probe_result(1, true);
        health.worker_died(0);
        assert!(!health.workers_alive());
        assert_eq!(health.alive_count(), 1);
        assert_eq!(health.failing_checks()[0].detail, "died");
    }
}
