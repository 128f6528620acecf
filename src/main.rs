//! dbtune-agent: entry point. Flags → configuration → adapter → startup checks → runner.

use dbtune_agent::adapter::select::{self, Detected};
use dbtune_agent::adapter::Adapter;
use dbtune_agent::config::{Config, Env};
use dbtune_agent::platform::http::Timing;
use dbtune_agent::platform::Platform;
use dbtune_agent::runner::{self, Command, Runner, RunnerOptions, Settings};
use dbtune_agent::{checks, cli, logging, version};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

fn main() {
    dbtune_agent::alloc::tune();
    std::process::exit(real_main());
}

fn fatal(msg: impl std::fmt::Display) -> i32 {
    log::error!("{msg}");
    1
}

fn real_main() -> i32 {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n{}", cli::USAGE);
            return 2;
        }
    };
    if cli.help {
        print!("{}", cli::USAGE);
        return 0;
    }
    if cli.version {
        println!("{}", version::long_version());
        return 0;
    }
    logging::init(false);
    if cli.health {
        return health(&cli);
    }
    match cli.command {
        Some(cli::Subcommand::Status) => return status_cmd(&cli),
        Some(cli::Subcommand::History) => return history_cmd(&cli),
        None => {}
    }
    dbtune_agent::runner::guard::install_hook();
    log::info!("dbtune-agent {} starting", version::VERSION);

    let dry_run = cli.dry_run;
    let cfg = match Config::load(cli.config.as_deref(), !dry_run) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    logging::init(cfg.debug);
    for w in &cfg.key_warnings {
        log::warn!("{w}");
    }
    if !dry_run {
        logging::register_secret(cfg.dbtune.api_key.expose());
    }
    // Whatever the form of the connection string, what its masked form hides (the password
    // among it) never reaches a log line either.
    for part in dbtune_agent::secret::conninfo::hidden_parts(cfg.postgresql.connection_url.expose())
    {
        logging::register_secret(&part);
    }
    // Proxy credentials (`HTTPS_PROXY=http://user:password@proxy:3128`) likewise.
    for var in [
        "ALL_PROXY",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "all_proxy",
        "https_proxy",
        "http_proxy",
    ] {
        if let Ok(v) = std::env::var(var) {
            let mut hidden = Vec::new();
            dbtune_agent::secret::url::mask_with(&v, &[], false, &mut hidden);
            hidden.iter().for_each(|h| logging::register_secret(h));
        }
    }
    if let Ok(info) =
        dbtune_agent::pg::conninfo::ConnInfo::parse(cfg.postgresql.connection_url.expose())
    {
        if let Some(pw) = info.config.get_password() {
            logging::register_secret(&String::from_utf8_lossy(pw));
        }
    }

    dbtune_agent::apply::history::set_limit(cfg.apply.history_limit);

    // Adapter choice.
    let provider = match select::from_flags(&cli.providers) {
        Some(p) => p,
        None => {
            log::info!("No explicit provider specified, detecting config present...");
            match select::detect(&Env::from_process(), &cfg.sources) {
                Detected::Provider(p) => p,
                Detected::AmbiguousAws => {
                    return fatal("Ambiguous configuration detected: AWS variables are set. Please specify which using `--rds` or `--aurora`.")
                }
            }
        }
    };
    let adapter: Arc<dyn Adapter> = match dbtune_agent::adapter::build(provider, &cfg) {
        Ok(a) => a,
        Err(e) => return fatal(e),
    };

    // `--output s3://bucket/key`: written to a local file first, uploaded after the pass.
    let s3_output = cli
        .output
        .as_ref()
        .and_then(|p| p.to_str())
        .filter(|p| p.starts_with("s3://"))
        .map(str::to_string);
    let local_output = match &s3_output {
        Some(url) => {
            if !(dry_run && cli.once) {
                return fatal(format!(
                    "--output {url}: an S3 destination needs --dry-run --once (the file is uploaded when the pass ends)"
                ));
            }
            if let Err(e) = dbtune_agent::audit::s3::S3Url::parse(url) {
                return fatal(format!("--output: {e}"));
            }
            Some(std::env::temp_dir().join(format!("dbtune-snapshot-{}.jsonl", std::process::id())))
        }
        None => cli.output.clone(),
    };

    // The S3 audit trail of configuration changes (not in a dry run: nothing is applied).
    let audit = if dry_run {
        None
    } else {
        match dbtune_agent::audit::Audit::start(&cfg.audit, &cfg.state_dir) {
            Ok(a) => a,
            Err(e) => return fatal(e),
        }
    };

    // Where payloads go.
    let mut platform = if dry_run {
        let out: Box<dyn Write + Send> = match &local_output {
            Some(p) => match std::fs::File::create(p) {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => return fatal(format!("--output {}: {e}", p.display())),
            },
            None => Box::new(std::io::stdout()),
        };
        Platform::dry_run(&cfg.dbtune.server_url, &cfg.dbtune.database_id, out)
    } else {
        Platform::http(
            &cfg.dbtune.server_url,
            &cfg.dbtune.database_id,
            cfg.dbtune.api_key.clone(),
            Timing::default(),
        )
    };

    // `--dry-run --once --plan FILE`: the plan goes into the dry-run summary instead.
    let plan_in_summary = dry_run && cli.once && matches!(cli.plan, Some(Some(_)));
    if let Some(plan) = cli.plan.as_ref().filter(|_| !plan_in_summary) {
        return run_plan(&adapter, &platform, plan.as_deref());
    }

    // PostgreSQL unreachable at start (down, still starting): the daemon waits for it rather
    // than exiting; the PostgreSQL checks are retried until they pass or fail for good.
    let mut startup_wait: Option<runner::startup::StartupWait> = None;
    if cli.check || !cfg.disable_checks {
        let id = runner::new_agent_id();
        let mut results = checks::run(&cfg, adapter.pg(), (!dry_run).then_some(&platform), &id);
        results.checks.extend(adapter.control_plane_checks());
        if cli.check {
            for c in &results.checks {
                println!("{c}");
            }
            // Unknown keys outside `apply` do not fail the check, but are listed.
            for w in &cfg.key_warnings {
                println!("[warn] {:<22} {w}", "configuration keys");
            }
            return if results.failed().is_some() { 1 } else { 0 };
        }
        if let Some(c) = results.only_pg_unreachable().filter(|_| !cli.once) {
            log::warn!(
                "PostgreSQL is not reachable yet ({}); waiting for it (retrying with backoff up to {}s). \
                 Heartbeats continue; database collection starts when it answers",
                c.detail,
                runner::startup::MAX_BACKOFF.as_secs()
            );
            let pg = adapter.pg().clone();
            let checks = Box::new(move || {
                let r = checks::pg_checks(&pg);
                match r.failed() {
                    None => runner::startup::Deferred::Passed,
                    Some(c) if r.only_pg_unreachable().is_some() => {
                        runner::startup::Deferred::Waiting(c.detail.clone())
                    }
                    Some(c) => runner::startup::Deferred::Failed(format!(
                        "Startup check failed: {}: {}",
                        c.name, c.detail
                    )),
                }
            });
            startup_wait = Some(runner::startup::StartupWait {
                reason: c.detail.clone(),
                checks,
            });
        } else if let Some(c) = results.failed() {
            return fatal(format!("Startup check failed: {}: {}", c.name, c.detail));
        }
    } else {
        log::info!("Startup checks are disabled via configuration (disable_checks=true)");
    }

    // An apply interrupted by a crash is settled (completed or rolled back) before anything else.
    if !dry_run {
        match adapter.recover() {
            Ok(r) if r.action == dbtune_agent::apply::recover::Recovery::Nothing => {
                log::debug!("{r}")
            }
            Ok(r) => log::warn!("{r}"),
            Err(e) => {
                log::error!("apply journal recovery failed (will retry before the next apply): {e}")
            }
        }
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    platform.set_stop_flag(stop.clone());
    let platform = Arc::new(platform);
    let platform_for_summary = platform.clone();
    let settings = Settings {
        memory_threshold: cfg.memory_threshold,
        allow_restart: cfg.runtime_allow_restart,
    };
    let (tx, rx) = crossbeam_channel::bounded::<Command>(8);

    // SIGHUP: re-read the file and environment; apply what can change at run time.
    let runtime = adapter.runtime();
    let reload_cfg_path = cli.config.clone();
    let settings_handle: Arc<std::sync::Mutex<Option<Arc<std::sync::RwLock<Settings>>>>> =
        Arc::new(std::sync::Mutex::new(None));
    let sh_for_reload = settings_handle.clone();
    let old = cfg.clone();
    let on_reload = Box::new(
        move || match Config::load(reload_cfg_path.as_deref(), !dry_run) {
            Err(e) => {
                log::error!("configuration reload failed; keeping the running configuration: {e}")
            }
            Ok(new) => {
                logging::init(new.debug);
                for w in &new.key_warnings {
                    log::warn!("{w}");
                }
                if let Some(s) = sh_for_reload
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    let mut s = s.write().unwrap_or_else(|p| p.into_inner());
                    s.memory_threshold = new.memory_threshold;
                    s.allow_restart = new.runtime_allow_restart;
                }
                {
                    let mut rt = runtime.write().unwrap_or_else(|p| p.into_inner());
                    rt.allow_restart = new.runtime_allow_restart;
                    rt.apply = new.apply.clone();
                }
                if new.postgresql.connection_url != old.postgresql.connection_url
                    || new.dbtune.server_url != old.dbtune.server_url
                    || new.dbtune.api_key != old.dbtune.api_key
                    || new.dbtune.database_id != old.dbtune.database_id
                {
                    log::warn!("configuration reloaded; connection and platform settings change only after a restart");
                } else {
                    log::info!("configuration reloaded");
                }
            }
        },
    );

    // systemd: READY=1 after the startup checks, WATCHDOG=1 while loops progress, RELOADING=1
    // around SIGHUP, STOPPING=1 at shutdown. The same supervision tick refreshes the liveness
    // file that `--health` reads.
    let notifier = dbtune_agent::sdnotify::Notifier::from_env().map(Arc::new);
    let alive_every = notifier
        .as_ref()
        .and_then(|n| n.watchdog_interval())
        .map(|w| (w / 2).min(Duration::from_secs(10)))
        .unwrap_or(Duration::from_secs(10));
    let (n_alive, n_reload, n_stop) = (notifier.clone(), notifier.clone(), notifier.clone());
    let state_dir = cfg.state_dir.clone();
    // The health gate, once the runner exists: the liveness file says why it is not ready.
    let gate: Arc<std::sync::OnceLock<Arc<runner::health::HealthGate>>> = Arc::default();
    let gate_for_alive = gate.clone();
    let on_alive = Box::new(move || {
        let not_ready = gate_for_alive.get().and_then(|g| g.not_ready());
        dbtune_agent::liveness::touch(&state_dir, not_ready.as_deref());
        if let Some(n) = &n_alive {
            if let Err(e) = n.watchdog() {
                log::debug!("sd_notify WATCHDOG=1: {e}");
            }
        }
    });
    let on_reload = Box::new(move || {
        if let Some(n) = &n_reload {
            let _ = n.reloading();
        }
        on_reload();
        if let Some(n) = &n_reload {
            let _ = n.ready();
        }
    });
    let on_stopping = Box::new(move || {
        if let Some(n) = &n_stop {
            let _ = n.stopping();
        }
    });
    let opts = RunnerOptions {
        on_reload: Some(on_reload),
        on_alive: Some(on_alive),
        on_stopping: Some(on_stopping),
        alive_every,
        // A dry run or a one-shot must not overwrite a running daemon's status.
        state_dir: (!dry_run && !cli.once).then(|| cfg.state_dir.clone()),
        startup_wait,
        ..RunnerOptions::default()
    };
    let r = Runner::new(adapter.clone(), platform, settings, &cfg.collectors, opts);
    let shared = r.shared();
    let _ = gate.set(shared.health.clone());
    *settings_handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.shared().settings.clone());
    if cli.once {
        r.run_once();
        if dry_run {
            let extra = match cli.plan.as_ref().and_then(|p| p.as_deref()) {
                Some(file) => match plan_text(&adapter, &platform_for_summary, Some(file)) {
                    Ok(t) => format!(
                        "recommendation from {} (--plan verdict; nothing applied):\n{}",
                        file.display(),
                        t.lines().map(|l| format!("  {l}\n")).collect::<String>()
                    ),
                    Err(e) => format!("recommendation: {e}\n"),
                },
                None => "recommendation: none (a dry run does not ask the platform; add --plan FILE to see what one would change)\n".into(),
            };
            if let Some(s) = platform_for_summary.dry_run_summary(&extra) {
                eprint!("{s}");
            }
        }
        if let Some(a) = &audit {
            a.flush(Duration::from_secs(10));
        }
        if let (Some(url), Some(file)) = (&s3_output, &local_output) {
            let res = dbtune_agent::audit::upload_snapshot(&cfg.audit, url, file);
            let _ = std::fs::remove_file(file);
            if let Err(e) = res {
                return fatal(e);
            }
        }
        return 0;
    }
    if let Err(e) = runner::signals::install(tx.clone()) {
        return fatal(format!("installing signal handlers: {e}"));
    }
    if let Some(n) = &notifier {
        if let Err(e) = n.ready() {
            log::warn!("sd_notify READY=1 failed: {e}");
        }
    }
    let _keep = tx;
    r.run(rx);
    if let Some(a) = &audit {
        a.flush(Duration::from_secs(5));
    }
    let exit_error = shared
        .exit_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(e) = exit_error {
        log::error!("dbtune-agent stopped: {e}");
        return 1;
    }
    log::info!("dbtune-agent stopped");
    0
}

/// The state directory and apply policy for the read-only commands: from the configuration,
/// else (an unreadable or invalid file) `DBT_STATE_DIR` or the default, with default policy.
fn state_for_commands(
    cli: &cli::Cli,
) -> (
    std::path::PathBuf,
    dbtune_agent::config::apply::ApplyConfig,
    Option<String>,
) {
    match Config::load(cli.config.as_deref(), false) {
        Ok(c) => (c.state_dir, c.apply, None),
        Err(e) => (
            std::env::var_os("DBT_STATE_DIR")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/dbtune-agent")),
            Default::default(),
            Some(e.to_string()),
        ),
    }
}

/// `status`: exit 0 healthy, 1 degraded, 3 not running.
fn status_cmd(cli: &cli::Cli) -> i32 {
    let (dir, policy, cfg_err) = state_for_commands(cli);
    if let Some(e) = &cfg_err {
        eprintln!(
            "note: configuration not loaded ({}); reading {}",
            e.lines().next().unwrap_or(""),
            dir.display()
        );
    }
    let r = dbtune_agent::status::gather(&dir, &policy);
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).unwrap_or_else(|_| "{}".into())
        );
    } else {
        print!("{}", dbtune_agent::status::render(&r));
    }
    r.exit_code()
}

/// `history [--limit N] [--json]`: newest first.
fn history_cmd(cli: &cli::Cli) -> i32 {
    use dbtune_agent::apply::history;
    let (dir, _, cfg_err) = state_for_commands(cli);
    if let Some(e) = &cfg_err {
        eprintln!(
            "note: configuration not loaded ({}); reading {}",
            e.lines().next().unwrap_or(""),
            dir.display()
        );
    }
    let mut records = match history::read(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "reading the apply history in {}: {e}",
                history::history_path(&dir).display()
            );
            return 1;
        }
    };
    records.truncate(cli.limit.unwrap_or(20));
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_else(|_| "[]".into())
        );
        return 0;
    }
    if records.is_empty() {
        println!(
            "No apply attempts recorded in {}.",
            history::history_path(&dir).display()
        );
        return 0;
    }
    for r in &records {
        println!(
            "{}  {:<15}  {}  ({}{})",
            r.finished_at,
            r.outcome.label(),
            r.recommendation_id,
            r.knob_application,
            if r.restarted { ", restarted" } else { "" }
        );
        let w = r.knobs.iter().map(|k| k.name.len()).max().unwrap_or(0);
        for k in &r.knobs {
            println!(
                "    {:<w$}  {} -> {}{}  [{}]{}",
                k.name,
                k.before.as_deref().unwrap_or("?"),
                k.after,
                k.unit
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default(),
                k.action,
                k.reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            );
        }
        for why in &r.reasons {
            println!("    reason: {why}");
        }
    }
    0
}

/// `--health`: 0 while a running agent (same state_dir) keeps making progress, also while it
/// waits for PostgreSQL (a liveness probe must not restart it for that; it says why it is
/// not ready).
fn health(cli: &cli::Cli) -> i32 {
    let (state_dir, _, _) = state_for_commands(cli);
    match dbtune_agent::liveness::check(&state_dir) {
        Ok(a) => {
            match &a.not_ready {
                Some(why) => println!(
                    "ok: loops made progress {}s ago ({}); not ready: {why}",
                    a.age.as_secs(),
                    a.file.display()
                ),
                None => println!(
                    "ok: loops made progress {}s ago ({})",
                    a.age.as_secs(),
                    a.file.display()
                ),
            }
            0
        }
        Err(e) => {
            println!("unhealthy: {e}");
            1
        }
    }
}

/// `--plan`: what a recommendation would change; applies nothing.
fn run_plan(
    adapter: &Arc<dyn Adapter>,
    platform: &Platform,
    file: Option<&std::path::Path>,
) -> i32 {
    match plan_text(adapter, platform, file) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => fatal(e),
    }
}

/// The plan of the recommendation in `file` (or the platform's), as text.
fn plan_text(
    adapter: &Arc<dyn Adapter>,
    platform: &Platform,
    file: Option<&std::path::Path>,
) -> Result<String, String> {
    let rec = match file {
        Some(p) => {
            let bytes = if p.as_os_str() == "-" {
                let mut v = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut v);
                v
            } else {
                std::fs::read(p).map_err(|e| format!("--plan {}: {e}", p.display()))?
            };
            dbtune_agent::platform::recommendation::decode(&bytes)
        }
        None => platform.recommendation(),
    };
    match rec {
        Err(e) => Err(format!("reading the recommendation: {e}")),
        Ok(None) => Ok("No recommendation: nothing would change.\n".into()),
        Ok(Some(rec)) => adapter.plan(&rec).map_err(|e| format!("planning: {e}")),
    }
}
