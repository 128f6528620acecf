//! SIGTERM/SIGINT → `Stop`, SIGHUP → `Reload`, delivered to the scheduler over its channel.

use super::Command;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub fn install(tx: Sender<Command>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                let cmd = if s == SIGHUP {
                    Command::Reload
                } else {
                    Command::Stop
                };
                log::info!(
                    "received {}",
                    if s == SIGHUP {
                        "SIGHUP: re-reading configuration"
                    } else {
                        "termination signal"
                    }
                );
                if tx.send(cmd).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}
