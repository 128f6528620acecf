//! Fixed worker threads fed by bounded crossbeam channels. Two lanes: `control` for the
//! platform-only tasks (heartbeat, guardrails, log shipping) so they never queue behind
//! database work, and `work` for everything that touches PostgreSQL.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::thread::JoinHandle;

pub type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Lane {
    tx: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl Lane {
    pub fn new(name: &str, threads: usize, queue: usize) -> Lane {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = bounded(queue);
        let handles = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .stack_size(512 * 1024)
                    .spawn(move || {
                        for job in rx.iter() {
                            job();
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        Lane {
            tx: Some(tx),
            handles,
        }
    }

    /// Queues a job; false when the lane is full (the task is retried on the next tick).
    pub fn submit(&self, job: Job) -> bool {
        match &self.tx {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        }
    }

    /// Stops accepting jobs; workers exit after their current job.
    pub fn close(&mut self) {
        self.tx = None;
    }

    pub fn join(mut self) {
        self.close();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
