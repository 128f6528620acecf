//! What an adapter holds to apply configuration: the pipeline bound to the provider's
//! [`Target`], the policy SIGHUP may change, and the state directory. Every adapter applies,
//! plans and recovers through this, so all of them get the same guarantees.

use super::{ApplyContext, ApplyError, Outcome, RecoveryReport, Target};
use crate::config::apply::ApplyConfig;
use crate::config::Config;
use crate::error::Result;
use crate::model::{KnobApplication, Recommendation};
use crate::pg::Pg;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Settings that SIGHUP may change without a restart.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub allow_restart: bool,
    pub apply: ApplyConfig,
}

pub struct Applier {
    target: Box<dyn Target>,
    runtime: Arc<RwLock<Runtime>>,
    state_dir: PathBuf,
}

impl Applier {
    pub fn new(cfg: &Config, target: Box<dyn Target>) -> Applier {
        let runtime = Runtime {
            allow_restart: cfg.runtime_allow_restart,
            apply: cfg.apply.clone(),
        };
        Applier::from_parts(target, runtime, cfg.state_dir.clone())
    }

    pub fn from_parts(target: Box<dyn Target>, runtime: Runtime, state_dir: PathBuf) -> Applier {
        Applier {
            target,
            runtime: Arc::new(RwLock::new(runtime)),
            state_dir,
        }
    }

    /// Handle for SIGHUP: replaces the runtime settings.
    pub fn runtime(&self) -> Arc<RwLock<Runtime>> {
        self.runtime.clone()
    }

    pub fn target(&self) -> &dyn Target {
        self.target.as_ref()
    }

    fn with_ctx<T>(&self, pg: &Pg, f: impl FnOnce(&ApplyContext<'_>) -> T) -> T {
        let rt = self
            .runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ctx = ApplyContext {
            pg,
            allow_restart: rt.allow_restart,
            target: self.target.as_ref(),
            policy: &rt.apply,
            state_dir: &self.state_dir,
            ready_timeout: rt.apply.ready_timeout,
        };
        f(&ctx)
    }

    pub fn apply(&self, pg: &Pg, rec: &Recommendation) -> std::result::Result<Outcome, ApplyError> {
        log::info!(
            "Applying Config: {} on {}",
            match rec.knob_application {
                KnobApplication::Restart => "restart",
                KnobApplication::Reload => "reload",
                KnobApplication::Unspecified => "",
            },
            self.target.describe()
        );
        self.with_ctx(pg, |ctx| super::apply(ctx, rec))
    }

    /// `--plan`: the report of what `rec` would change (nothing is applied).
    pub fn plan(&self, pg: &Pg, rec: &Recommendation) -> Result<String> {
        self.with_ctx(pg, |ctx| super::plan(ctx, rec))
            .map(|p| p.to_string())
    }

    /// Settles an apply that an earlier run left unfinished (journal in the state directory).
    pub fn recover(&self, pg: &Pg) -> Result<RecoveryReport> {
        self.with_ctx(pg, super::recover)
    }
}
