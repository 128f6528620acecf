//! Command line (lexopt). The Go agent's flags with Go `flag` package conventions (one or two
//! dashes, `--flag=true|false`), plus `--config`, `--check`, `--dry-run`, `--output`, `--once`
//! and `--plan`; and the subcommands `status` and `history`. `USAGE` is the one text for
//! `--help` and the man page (`man_page()` renders it; `packaging/dbtune-agent.1` is checked
//! against it by a test).

use crate::adapter::select::Provider;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Default, PartialEq)]
pub struct Cli {
    pub providers: Vec<Provider>,
    pub version: bool,
    pub help: bool,
    pub config: Option<PathBuf>,
    pub check: bool,
    pub dry_run: bool,
    pub output: Option<PathBuf>,
    pub once: bool,
    /// `--health`: exit 0 while a running agent's loops make progress (container probes).
    pub health: bool,
    /// `--plan FILE` (a recommendation as JSON; `-` for stdin) or `--plan` alone (ask the platform).
    pub plan: Option<Option<PathBuf>>,
    pub command: Option<Subcommand>,
    /// `status --json`, `history --json`.
    pub json: bool,
    /// `history --limit N`.
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subcommand {
    /// Is the agent working (exit 0 healthy, 1 degraded, 3 not running).
    Status,
    /// The local apply history, newest first.
    History,
}

pub const USAGE: &str = "\
Usage: dbtune-agent [flags]
       dbtune-agent status [--json] [--config PATH]
       dbtune-agent history [--limit N] [--json] [--config PATH]

Commands (read the state directory; work as the agent's user, running or not):
  status         provider, PostgreSQL, last sends, platform outage, last apply, restart budget, freeze, journal; exit 0 healthy, 1 degraded, 3 not running
  history        the local apply history, newest first: outcome and per knob the value before and after, with reasons
  --json         status, history: one JSON document for scripts and monitoring
  --limit N      history: show at most N attempts (default 20)

Provider (default: detected from the environment and dbtune.yaml, else --local):
  --local        self-managed PostgreSQL (systemd unit or restart script)
  --docker       PostgreSQL in a Docker container
  --patroni      Patroni cluster member
  --cnpg         CloudNativePG cluster
  --rds          AWS RDS for PostgreSQL
  --aurora       AWS Aurora PostgreSQL
  --cloudsql     Google Cloud SQL
  --azure-flex   Azure Database for PostgreSQL Flexible Server
  --aiven        Aiven for PostgreSQL

Modes:
  --config PATH  read this file instead of searching /etc/dbtune.yaml, /etc/dbtune/dbtune.yaml, ./dbtune.yaml
  --check        run the startup checks, print a report, exit 1 on any failure
  --dry-run      send nothing: write every payload as a JSON line to stdout (or --output FILE), a summary to stderr
  --output FILE  where --dry-run writes; s3://bucket/key uploads the file to S3 at the end (with --once)
  --once         one pass of every loop, then exit
  --plan [FILE]  show what a recommendation (from FILE, or from the platform) would change; applies nothing
  --health       exit 0 while a running agent's loops make progress (for container probes)
  --version      print the version and exit
  -h, --help     this help
";

fn bool_value(name: &str, v: Option<OsString>) -> Result<bool, String> {
    match v {
        None => Ok(true),
        Some(s) => {
            let s = s.to_string_lossy();
            crate::config::sources::parse_go_bool(&s)
                .ok_or_else(|| format!("invalid boolean value {s:?} for -{name}: parse error"))
        }
    }
}

/// Go's flag package accepts `-local`; lexopt would read that as short flags, so a single-dash
/// word becomes a long option.
fn normalise(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") {
                OsString::from(format!("-{s}"))
            } else {
                a
            }
        })
        .collect()
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    use lexopt::prelude::*;
    let mut cli = Cli::default();
    let mut p = lexopt::Parser::from_args(normalise(args));
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let provider = |name: &str| match name {
            "docker" => Some(Provider::Docker),
            "rds" => Some(Provider::Rds),
            "aurora" => Some(Provider::Aurora),
            "aiven" => Some(Provider::Aiven),
            "cloudsql" => Some(Provider::CloudSql),
            "local" => Some(Provider::Local),
            "cnpg" => Some(Provider::Cnpg),
            "patroni" => Some(Provider::Patroni),
            "azure-flex" => Some(Provider::AzureFlex),
            _ => None,
        };
        match arg {
            Short('h') | Long("help") => cli.help = true,
            Long(name) if provider(name).is_some() => {
                let pr = provider(name).unwrap_or(Provider::Local);
                let name = name.to_string();
                if bool_value(&name, p.optional_value())? {
                    cli.providers.push(pr);
                }
            }
            Long("version") => cli.version = bool_value("version", p.optional_value())?,
            Long("check") => cli.check = bool_value("check", p.optional_value())?,
            Long("dry-run") => cli.dry_run = bool_value("dry-run", p.optional_value())?,
            Long("once") => cli.once = bool_value("once", p.optional_value())?,
            Long("health") => cli.health = bool_value("health", p.optional_value())?,
            Long("config") => {
                cli.config = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Long("output") => {
                cli.output = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Long("plan") => {
                let v = p.optional_value().or_else(|| {
                    // `--plan FILE` as well as `--plan=FILE`.
                    let next = p.try_raw_args()?.peek()?.to_owned();
                    if next.to_string_lossy().starts_with('-') && next != "-" {
                        None
                    } else {
                        p.try_raw_args()?.next()
                    }
                });
                cli.plan = Some(v.map(PathBuf::from));
            }
            Long("json") if cli.command.is_some() => cli.json = true,
            Long("limit") if cli.command == Some(Subcommand::History) => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_string_lossy();
                cli.limit = Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("invalid value {v:?} for --limit: expected a positive integer")
                })?);
            }
            Value(v) if cli.command.is_none() && (v == "status" || v == "history") => {
                cli.command = Some(if v == "status" {
                    Subcommand::Status
                } else {
                    Subcommand::History
                });
            }
            // Like Go's flag package, parsing stops at the first non-flag argument.
            Value(_) => break,
            Long(name) => return Err(format!("flag provided but not defined: -{name}")),
            Short(c) => return Err(format!("flag provided but not defined: -{c}")),
        }
    }
    Ok(cli)
}

/// Escapes text for troff (`\` and a leading `.` or `'`).
fn roff(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The man page, rendered from [`USAGE`] (section headers end with `:`; entries are a flag
/// column and a text column separated by two spaces or more).
pub fn man_page() -> String {
    let mut out = String::new();
    out.push_str(".\\\" Generated from src/cli.rs USAGE by `DBTUNE_REGEN_MAN=1 cargo test --lib cli`; do not edit.\n");
    out.push_str(".TH DBTUNE\\-AGENT 1 \"\" \"dbtune-agent\" \"User Commands\"\n");
    out.push_str(".SH NAME\ndbtune\\-agent \\- DBtune agent: PostgreSQL metrics and safe configuration tuning\n");
    out.push_str(".SH SYNOPSIS\n");
    let mut lines = USAGE.lines().peekable();
    while let Some(l) = lines.peek() {
        let l = *l;
        if l.is_empty() {
            lines.next();
            break;
        }
        let l = l.trim_start_matches("Usage: ").trim_start();
        out.push_str(&format!(".B {}\n.br\n", roff(l)));
        lines.next();
    }
    out.push_str(".SH DESCRIPTION\n");
    out.push_str("The DBtune agent runs next to PostgreSQL: it collects metrics and configuration, sends them to the DBtune platform, applies recommended configurations safely and raises guardrail signals. Configuration is read from dbtune.yaml and DBT_* environment variables.\n");
    for l in lines {
        if l.is_empty() {
            continue;
        }
        if !l.starts_with(' ') {
            out.push_str(&format!(
                ".SH {}\n",
                roff(l.trim_end_matches(':')).to_uppercase()
            ));
            continue;
        }
        let t = l.trim_start();
        match t.find("  ") {
            Some(i) => out.push_str(&format!(
                ".TP\n.B {}\n{}\n",
                roff(t[..i].trim()),
                roff(t[i..].trim())
            )),
            None => out.push_str(&format!("{}\n", roff(t))),
        }
    }
    out.push_str(".SH EXIT STATUS\n");
    out.push_str(".TP\n.B 0\nsuccess; for status: healthy\n");
    out.push_str(".TP\n.B 1\nan error; for status: degraded (PostgreSQL unreachable, platform failing, an apply awaiting recovery or a failed rollback)\n");
    out.push_str(".TP\n.B 2\na command-line error\n");
    out.push_str(".TP\n.B 3\nstatus: the agent is not running\n");
    out.push_str(".SH FILES\n.TP\n.I /etc/dbtune/dbtune.yaml\nthe configuration\n.TP\n.I /var/lib/dbtune\\-agent\nthe state directory (apply journal, history, status, audit outbox)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Cli, String> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn go_style_flags() {
        let c = p(&["-local", "--docker=false", "--dry-run", "--once"]).unwrap();
        assert_eq!(c.providers, vec![Provider::Local]);
        assert!(c.dry_run && c.once);
        assert!(p(&["--local=maybe"]).is_err());
        assert_eq!(
            p(&["--nope"]).unwrap_err(),
            "flag provided but not defined: -nope"
        );
        assert_eq!(
            p(&["--plan", "rec.json"]).unwrap().plan,
            Some(Some(PathBuf::from("rec.json")))
        );
        assert_eq!(p(&["--plan", "--local"]).unwrap().plan, Some(None));
        assert_eq!(
            p(&["--config", "/x.yaml"]).unwrap().config,
            Some(PathBuf::from("/x.yaml"))
        );
        assert!(p(&["-h"]).unwrap().help);
        let c = p(&["history", "--limit", "5", "--json"]).unwrap();
        assert_eq!(
            (c.command, c.limit, c.json),
            (Some(Subcommand::History), Some(5), true)
        );
        assert!(p(&["history", "--limit", "0"])
            .unwrap_err()
            .contains("--limit"));
        assert!(p(&["--json"]).is_err(), "--json belongs to a subcommand");
        let c = p(&["status", "--config", "/x.yaml"]).unwrap();
        assert_eq!(c.command, Some(Subcommand::Status));
    }

    /// The installed man page is generated from USAGE: they cannot drift.
    #[test]
    fn man_page_matches_help() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/dbtune-agent.1");
        let want = man_page();
        if std::env::var_os("DBTUNE_REGEN_MAN").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with cli::USAGE; regenerate with DBTUNE_REGEN_MAN=1 cargo test --lib cli",
            path.display()
        );
        // Every flag of the help is in the page.
        for flag in [
            "\\-\\-dry\\-run",
            "\\-\\-plan",
            "status",
            "history",
            "\\-\\-limit",
        ] {
            assert!(have.contains(flag), "{flag}");
        }
    }
}
