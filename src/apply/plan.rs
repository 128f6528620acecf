//! `plan`: what applying a recommendation would do — the diff against the running values,
//! which knobs need a restart, what policy or validation would refuse. Applies nothing.

use super::journal::Journal;
use super::{prepare, Action, ApplyContext};
use crate::error::Result;
use crate::model::Recommendation;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct PlanLine {
    pub name: String,
    pub current: Option<String>,
    pub proposed: String,
    pub unit: Option<String>,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub lines: Vec<PlanLine>,
    /// Reasons the whole recommendation would be refused (freeze, restart policy, budget, window).
    pub blockers: Vec<String>,
    /// An interrupted apply that `apply` would settle first.
    pub pending_recovery: Option<String>,
}

impl Plan {
    pub fn refused(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.action, Action::Refused(_)))
            .count()
    }
    pub fn changes(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.action, Action::Reload | Action::Restart))
            .count()
    }
    pub fn restarts(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.action == Action::Restart)
            .map(|l| l.name.as_str())
            .collect()
    }
    /// Whether `apply` would change anything.
    pub fn would_apply(&self) -> bool {
        self.refused() == 0 && self.blockers.is_empty() && self.changes() > 0
    }
}

/// Checks `rec` against the running server, the local policy and the journal.
pub fn plan(ctx: &ApplyContext<'_>, rec: &Recommendation) -> Result<Plan> {
    let p = prepare(ctx, rec)?;
    let pending_recovery = Journal::new(ctx.state_dir)
        .load()?
        .filter(|e| e.phase.unfinished())
        .map(|e| {
            format!(
                "an interrupted apply of [{}] ({:?}) will be recovered first",
                e.knobs
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                e.phase
            )
        });
    Ok(Plan {
        lines: p
            .knobs
            .into_iter()
            .map(|k| PlanLine {
                name: k.name,
                current: k.current,
                proposed: k.proposed,
                unit: k.unit,
                action: k.action,
            })
            .collect(),
        blockers: p.blockers,
        pending_recovery,
    })
}

fn with_unit(v: &str, unit: &Option<String>) -> String {
    match unit {
        Some(u) => format!("{v} {u}"),
        None => format!("{v:?}"),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Plan ({} knob(s); nothing is applied):",
            self.lines.len()
        )?;
        let w = self
            .lines
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        for l in &self.lines {
            let cur = l
                .current
                .as_deref()
                .map(|c| with_unit(c, &l.unit))
                .unwrap_or_else(|| "-".into());
            let new = with_unit(&l.proposed, &l.unit);
            match &l.action {
                Action::Unchanged => writeln!(f, "  = {:w$}  {cur} (already set)", l.name)?,
                Action::Reload => writeln!(f, "  ~ {:w$}  {cur} -> {new}  (reload)", l.name)?,
                Action::Restart => writeln!(f, "  ! {:w$}  {cur} -> {new}  (RESTART)", l.name)?,
                Action::Refused(why) => writeln!(f, "  x {:w$}  {new}  REFUSED: {why}", l.name)?,
            }
        }
        let restarts = self.restarts();
        if !restarts.is_empty() {
            writeln!(f, "Needs a restart: {}", restarts.join(", "))?;
        }
        if let Some(r) = &self.pending_recovery {
            writeln!(f, "Note: {r}")?;
        }
        for b in &self.blockers {
            writeln!(f, "Blocked: {b}")?;
        }
        let verdict = if self.refused() > 0 {
            format!("apply would refuse the whole recommendation ({} knob(s) rejected); nothing would change", self.refused())
        } else if self.changes() == 0 {
            "nothing to do: every knob already has its value (no reload, no restart)".to_string()
        } else if !self.blockers.is_empty() {
            "apply would refuse the recommendation; nothing would change".to_string()
        } else if restarts.is_empty() {
            format!(
                "apply would change {} knob(s) and reload the configuration",
                self.changes()
            )
        } else {
            format!(
                "apply would change {} knob(s) and restart PostgreSQL",
                self.changes()
            )
        };
        writeln!(f, "Result: {verdict}")
    }
}
