//! The kubelet's cAdvisor metrics (Prometheus text exposition): a real parser for
//! `name{label="value",…} value [timestamp]` (label values may hold spaces, commas, `}` and
//! escaped quotes: adapters.md §5.8.9), and the series the adapter reads for one container.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line has one.
    pub timestamp: Option<i64>,
}

/// Parses one sample line; None for comments, blank lines and malformed lines.
pub fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end: usize;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (i, c) = chars.next()?;
            if c == '}' {
                end = i + 1;
                break;
            }
            let mut key = String::from(c);
            loop {
                let (_, c) = chars.next()?;
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut val = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => val.push('\n'),
                        other => val.push(other),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            labels.insert(key.trim().to_string(), val);
        }
        rest = &r[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let timestamp = fields.next().and_then(|t| t.parse().ok());
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// What the adapter takes from one scrape for one container of one pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerSeries {
    pub cpu_quota: Option<f64>,
    pub cpu_period: Option<f64>,
    pub memory_limit: Option<f64>,
    pub fs_reads: Option<f64>,
    pub fs_writes: Option<f64>,
    pub fs_usage: Option<f64>,
    pub fs_limit: Option<f64>,
    /// Pod network (the sandbox's series: `container=""` or `"POD"`), summed over interfaces.
    pub net_rx: Option<f64>,
    pub net_tx: Option<f64>,
    pub load_average: Option<f64>,
    /// The newest timestamp among the container's series (ms).
    pub timestamp: Option<i64>,
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

/// Picks the series of `container` in `pod`/`namespace` out of a scrape. Counters are summed
/// over devices and interfaces.
pub fn container_series(
    text: &str,
    namespace: &str,
    pod: &str,
    container: &str,
) -> ContainerSeries {
    let mut out = ContainerSeries::default();
    for s in text.lines().filter_map(parse_line) {
        if s.name == "machine_load_average" && out.load_average.is_none() {
            out.load_average = Some(s.value);
            continue;
        }
        let l = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or("");
        if l("namespace") != namespace || l("pod") != pod {
            continue;
        }
        let c = l("container");
        if s.name.starts_with("container_network_") {
            if c.is_empty() || c == "POD" || c == container {
                match s.name.as_str() {
                    "container_network_receive_bytes_total" => add(&mut out.net_rx, s.value),
                    "container_network_transmit_bytes_total" => add(&mut out.net_tx, s.value),
                    _ => {}
                }
            }
            continue;
        }
        if c != container {
            continue;
        }
        if let Some(t) = s.timestamp {
            out.timestamp = Some(out.timestamp.map_or(t, |o| o.max(t)));
        }
        match s.name.as_str() {
            "container_spec_cpu_quota" => out.cpu_quota = Some(s.value),
            "container_spec_cpu_period" => out.cpu_period = Some(s.value),
            "container_spec_memory_limit_bytes" => out.memory_limit = Some(s.value),
            "container_fs_reads_total" => add(&mut out.fs_reads, s.value),
            "container_fs_writes_total" => add(&mut out.fs_writes, s.value),
            "container_fs_usage_bytes" => add(&mut out.fs_usage, s.value),
            "container_fs_limit_bytes" => add(&mut out.fs_limit, s.value),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_with_spaces_commas_braces_and_escapes() {
        let s = parse_line(
            r#"cadvisor_version_info{kernelVersion="4.1.6-200.fc22.x86_64",osVersion="Fedora 22 (Twenty Two)",odd="a,b} \"c\""} 1"#,
        )
        .unwrap();
        assert_eq!(s.labels["osVersion"], "Fedora 22 (Twenty Two)");
        assert_eq!(s.labels["odd"], "a,b} \"c\"");
        assert_eq!((s.value, s.timestamp), (1.0, None));
        let s = parse_line("machine_load_average 0.5 1395066363000").unwrap();
        assert_eq!((s.value, s.timestamp), (0.5, Some(1395066363000)));
        assert!(parse_line("# HELP x y").is_none());
        assert!(parse_line("x{a=\"unterminated} 1").is_none());
    }

    #[test]
    fn parses_the_whole_cadvisor_golden_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/testdata/vendor-api/cadvisor/prometheus_metrics"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (CI lays shared/ beside the repository)"));
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        let parsed = text.lines().filter_map(parse_line).count();
        assert_eq!(parsed, lines, "every sample line parses");
    }

    #[test]
    fn selects_one_container_and_sums_devices_and_interfaces() {
        let text = r#"
container_fs_reads_total{container="postgres",device="/dev/sda",namespace="db",pod="pg-1"} 10 1000
container_fs_reads_total{container="postgres",device="/dev/sdb",namespace="db",pod="pg-1"} 5 2000
container_fs_reads_total{container="bootstrap",device="/dev/sda",namespace="db",pod="pg-1"} 99 1000
container_fs_reads_total{container="postgres",device="/dev/sda",namespace="db",pod="pg-2"} 77 1000
container_network_receive_bytes_total{container="",interface="eth0",namespace="db",pod="pg-1"} 100 1000
container_network_receive_bytes_total{container="",interface="eth1",namespace="db",pod="pg-1"} 1 1000
container_spec_cpu_quota{container="postgres",image="ghcr.io/cloudnative-pg/postgresql:16 (debian)",namespace="db",pod="pg-1"} 150000
container_spec_cpu_period{container="postgres",namespace="db",pod="pg-1"} 100000
"#;
        let s = container_series(text, "db", "pg-1", "postgres");
        assert_eq!(s.fs_reads, Some(15.0));
        assert_eq!(s.net_rx, Some(101.0));
        assert_eq!(
            (s.cpu_quota, s.cpu_period),
            (Some(150000.0), Some(100000.0))
        );
        assert_eq!(s.timestamp, Some(2000));
        assert_eq!(s.fs_writes, None);
    }
}
