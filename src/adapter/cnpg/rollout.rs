//! Waiting for CloudNativePG to finish what a patch started (adapters.md §5.8.3 fixed): the
//! Cluster is done with generation `g` when its Ready condition has observed `g` and it is
//! healthy with every instance ready. That holds even when the whole rollout happened between
//! two polls (the Go agent waited to *see* a non-healthy phase and could hang for an hour).
//! Operators that do not report `observedGeneration` fall back to "a transition was seen, or
//! the Cluster stayed healthy for several polls"; the pipeline's `pg_settings` verification
//! has the last word either way. A phase that needs intervention fails the wait at once.

use super::api::ClusterState;
use super::Inner;
use crate::apply::wait;
use crate::cloud::ErrorKind;
use crate::error::{Error, Result};
use std::time::Duration;

pub const POLL: Duration = Duration::from_secs(2);
/// Healthy polls in a row accepted as "done" without an observed generation.
const HEALTHY_POLLS: u32 = 3;

/// Waits until the Cluster has reconciled `generation` and is healthy.
pub fn wait_reconciled(
    inner: &Inner,
    generation: i64,
    deadline: Duration,
    what: &str,
) -> Result<ClusterState> {
    let mut seen_transition = false;
    let mut healthy_polls = 0;
    let what = format!(
        "Cluster {}/{} to {what}",
        inner.cfg.namespace, inner.cfg.cluster_name
    );
    let r = wait::until(&what, deadline, POLL, |last| {
        let c = match inner.api.cluster() {
            Ok(c) => c,
            Err(e)
                if matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout)
                    || e.status.is_some_and(|s| s >= 500 || s == 429) =>
            {
                *last = e.to_string();
                return Ok(None);
            }
            Err(e) => return Err(Error::other(format!("reading the Cluster: {e}"))),
        };
        *last = c.summary();
        if let Some(why) = c.failed() {
            return Err(Error::other(format!(
                "Cluster {}/{} went to {why} after the change",
                inner.cfg.namespace, inner.cfg.cluster_name
            )));
        }
        if !c.settled() {
            seen_transition = true;
            healthy_polls = 0;
            return Ok(None);
        }
        healthy_polls += 1;
        let observed = c.observed_generation.is_some_and(|o| o >= generation);
        let fallback = c.observed_generation.is_none_or(|o| o < generation)
            && (seen_transition || c.observed_generation.is_none())
            && healthy_polls >= HEALTHY_POLLS;
        if observed || fallback {
            Ok(Some(c))
        } else {
            Ok(None)
        }
    });
    inner.invalidate_cluster();
    r
}
