//! Bytes received and sent by the host's network interfaces (loopback excluded: local
//! client traffic to PostgreSQL is not network load), from sysinfo's per-interface counters.

use sysinfo::Networks;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetBytes {
    pub received: u64,
    pub sent: u64,
}

/// Keeps sysinfo's interface list between samples (interfaces may appear and go).
pub struct Interfaces {
    /// `None` where sysinfo does not support the platform.
    networks: Option<Networks>,
}

impl Default for Interfaces {
    fn default() -> Self {
        Interfaces {
            networks: Networks::new().ok(),
        }
    }
}

fn is_loopback(name: &std::ffi::OsStr, data: &sysinfo::NetworkData) -> bool {
    name == "lo"
        || (!data.ip_networks().is_empty()
            && data.ip_networks().iter().all(|n| n.addr.is_loopback()))
}

impl Interfaces {
    /// Totals since boot over every non-loopback interface.
    pub fn totals(&mut self) -> Option<NetBytes> {
        let networks = self.networks.as_mut()?;
        networks.refresh(true);
        let totals = networks
            .iter()
            .filter(|(name, data)| !is_loopback(name, data))
            .fold(NetBytes::default(), |acc, (_, d)| NetBytes {
                received: acc.received + d.total_received(),
                sent: acc.sent + d.total_transmitted(),
            });
        Some(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against /sys/class/net, summed here independently.
    #[test]
    fn totals_match_sysfs_without_loopback() {
        let mut sum = NetBytes::default();
        let mut names = Vec::new();
        for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // ARPHRD_LOOPBACK
            let ty = std::fs::read_to_string(e.path().join("type")).unwrap_or_default();
            if ty.trim() == "772" {
                continue;
            }
            let read = |f: &str| -> u64 {
                std::fs::read_to_string(e.path().join("statistics").join(f))
                    .map(|s| s.trim().parse().unwrap_or(0))
                    .unwrap_or(0)
            };
            sum.received += read("rx_bytes");
            sum.sent += read("tx_bytes");
            names.push(name);
        }
        let got = Interfaces::default().totals().unwrap();
        // Counters move between the two reads: allow 1 MiB of traffic in between.
        assert!(got.received >= sum.received, "{got:?} {sum:?} {names:?}");
        assert!(got.received - sum.received < 1 << 20, "{got:?} {sum:?}");
        assert!(
            got.sent >= sum.sent && got.sent - sum.sent < 1 << 20,
            "{got:?} {sum:?}"
        );
    }
}
