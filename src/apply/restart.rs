//! Restart mechanisms: an operator's restart script, or `systemctl restart <unit>` with a
//! `sudo -n` fallback. Every command runs with a timeout.
