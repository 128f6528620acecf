//! Command line (lexopt). The Go agent's flags with Go `flag` package conventions (one or two
//! dashes, `--flag=true|false`), plus `--config`, `--check`, `--dry-run`, `--output`, `--once`
//! and `--plan`.

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
}

pub const USAGE: &str = "\
Usage: dbtune-agent [flags]

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
  --dry-run      send nothing: write every payload as a JSON line to stdout (or --output FILE)
  --output FILE  where --dry-run writes
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
            // Like Go's flag package, parsing stops at the first non-flag argument.
            Value(_) => break,
            Long(name) => return Err(format!("flag provided but not defined: -{name}")),
            Short(c) => return Err(format!("flag provided but not defined: -{c}")),
        }
    }
    Ok(cli)
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
    }
}
