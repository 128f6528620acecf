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
    dbtune_agent::runner::guard::install_hook();
    log::info!("dbtune-agent {} starting", version::VERSION);

    let dry_run = cli.dry_run;
    let cfg = match Config::load(cli.config.as_deref(), !dry_run) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    logging::init(cfg.debug);
    if !dry_run {
        logging::register_secret(cfg.dbtune.api_key.expose());
    }
    if let Ok(info) =
        dbtune_agent::pg::conninfo::ConnInfo::parse(cfg.postgresql.connection_url.expose())
    {
        if let Some(pw) = info.config.get_password() {
            logging::register_secret(&String::from_utf8_lossy(pw));
        }
    }

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

    // Where payloads go.
    let mut platform = if dry_run {
        let out: Box<dyn Write + Send> = match &cli.output {
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

    if let Some(plan) = &cli.plan {
        return run_plan(&adapter, &platform, plan.as_deref());
    }

    if cli.check || !cfg.disable_checks {
        let id = runner::new_agent_id();
        let mut results = checks::run(&cfg, adapter.pg(), (!dry_run).then_some(&platform), &id);
        results.extend(adapter.control_plane_checks());
        let failed = results.iter().any(|c| !c.ok);
        if cli.check {
            for c in &results {
                println!("{c}");
            }
            return if failed { 1 } else { 0 };
        }
        if let Some(c) = results.iter().find(|c| !c.ok) {
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
    let on_alive = Box::new(move || {
        dbtune_agent::liveness::touch(&state_dir);
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
        ..RunnerOptions::default()
    };
    let r = Runner::new(adapter.clone(), platform, settings, &cfg.collectors, opts);
    *settings_handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.shared().settings.clone());
    if cli.once {
        r.run_once();
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
    log::info!("dbtune-agent stopped");
    0
}

/// `--health`: 0 while a running agent (same state_dir) keeps making progress.
fn health(cli: &cli::Cli) -> i32 {
    let state_dir = match Config::load(cli.config.as_deref(), false) {
        Ok(c) => c.state_dir,
        Err(_) => std::env::var_os("DBT_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/dbtune-agent")),
    };
    match dbtune_agent::liveness::check(&state_dir) {
        Ok(age) => {
            println!("ok: loops made progress {}s ago", age.as_secs());
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
    let rec = match file {
        Some(p) => {
            let bytes = if p.as_os_str() == "-" {
                let mut v = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut v);
                v
            } else {
                match std::fs::read(p) {
                    Ok(b) => b,
                    Err(e) => return fatal(format!("--plan {}: {e}", p.display())),
                }
            };
            dbtune_agent::platform::recommendation::decode(&bytes)
        }
        None => platform.recommendation(),
    };
    match rec {
        Err(e) => fatal(format!("reading the recommendation: {e}")),
        Ok(None) => {
            println!("No recommendation: nothing would change.");
            0
        }
        Ok(Some(rec)) => match adapter.plan(&rec) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => fatal(format!("planning: {e}")),
        },
    }
}
