//! Counters of the HTTP side and the Prometheus text exposition (format
//! 0.0.4) of everything `/metrics` shows.

use crate::core::{Node, Reason};
use std::fmt::Write;

/// Statuses counted one by one; anything else is counted as `other`.
const STATUSES: [u16; 20] = [
    100, 200, 201, 202, 204, 400, 401, 404, 405, 408, 409, 413, 414, 429, 431, 500, 501, 503, 505,
    0,
];

/// HTTP-side counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Connections refused over `--max-connections`.
    pub connections_refused: u64,
    /// Node-to-node connections closed still handshaking, to make room for
    /// newer ones (over `INBOUND_HANDSHAKES_MAX`).
    pub cluster_connections_refused: u64,
    /// Responses by position in `STATUSES`.
    responses: [u64; STATUSES.len()],
}

impl Metrics {
    /// Counts one response.
    pub fn count_response(&mut self, status: u16) {
        let last = STATUSES.len() - 1;
        let i = STATUSES[..last]
            .iter()
            .position(|&s| s == status)
            .unwrap_or(last);
        self.responses[i] += 1;
    }

    /// Responses with `status` so far.
    pub fn responses(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(0, |i| self.responses[i])
    }
}

/// Cluster peers by state, for the exposition.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCounts {
    /// Connected and authenticated.
    pub up: u64,
    /// Unreachable.
    pub down: u64,
    /// Being dialled or handshaking.
    pub connecting: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(
        out,
        "# HELP pairlink_{name} {help}\n# TYPE pairlink_{name} {kind}\n"
    );
}

fn sample(out: &mut String, name: &str, value: u64) {
    let _ = writeln!(out, "pairlink_{name} {value}");
}

/// Renders every metric. `rtts` gives each peer's name and last heartbeat
/// round trip.
pub fn render<W>(
    metrics: &Metrics,
    node: &Node<W>,
    peers: PeerCounts,
    rtts: &[(&str, Option<u64>)],
) -> Vec<u8> {
    let mut out = String::with_capacity(4096);
    let stats = node.stats();
    family(
        &mut out,
        "connections_open",
        "gauge",
        "Open HTTP connections.",
    );
    sample(&mut out, "connections_open", metrics.connections_open);
    family(
        &mut out,
        "connections_accepted_total",
        "counter",
        "HTTP connections accepted.",
    );
    sample(
        &mut out,
        "connections_accepted_total",
        metrics.connections_accepted,
    );
    family(
        &mut out,
        "connections_refused_total",
        "counter",
        "HTTP connections refused over --max-connections.",
    );
    sample(
        &mut out,
        "connections_refused_total",
        metrics.connections_refused,
    );
    family(
        &mut out,
        "sessions_live",
        "gauge",
        "Live sessions on this node.",
    );
    sample(&mut out, "sessions_live", node.sessions_live() as u64);
    family(
        &mut out,
        "polls_waiting",
        "gauge",
        "Long polls waiting for events.",
    );
    sample(&mut out, "polls_waiting", node.polls_waiting() as u64);
    family(
        &mut out,
        "buffered_bytes",
        "gauge",
        "Unacknowledged message bytes of all sessions.",
    );
    sample(&mut out, "buffered_bytes", node.buffered_bytes() as u64);
    family(
        &mut out,
        "messages_relayed_total",
        "counter",
        "Messages put into a peer session's buffer.",
    );
    sample(&mut out, "messages_relayed_total", stats.messages_relayed);
    family(
        &mut out,
        "lookups_total",
        "counter",
        "Peer lookups at join, by outcome.",
    );
    for (outcome, n) in [
        ("local", stats.lookups_local),
        ("remote", stats.lookups_remote),
        ("miss", stats.lookups_miss),
    ] {
        let _ = writeln!(out, "pairlink_lookups_total{{outcome=\"{outcome}\"}} {n}");
    }
    family(
        &mut out,
        "session_exits_total",
        "counter",
        "Sessions ended, by reason.",
    );
    for reason in Reason::ALL {
        let _ = writeln!(
            out,
            "pairlink_session_exits_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            stats.exits[reason.index()]
        );
    }
    family(
        &mut out,
        "peer_offline_total",
        "counter",
        "peer_offline events given to sessions (link exits), by reason.",
    );
    for reason in Reason::ALL {
        let _ = writeln!(
            out,
            "pairlink_peer_offline_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            stats.peer_offline[reason.index()]
        );
    }
    family(
        &mut out,
        "http_responses_total",
        "counter",
        "HTTP responses, by status.",
    );
    for (i, &status) in STATUSES.iter().enumerate() {
        let n = metrics.responses[i];
        if status == 0 {
            let _ = writeln!(out, "pairlink_http_responses_total{{status=\"other\"}} {n}");
        } else {
            let _ = writeln!(
                out,
                "pairlink_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "forwarded_requests_total",
        "counter",
        "Client requests carried out on the session's home node.",
    );
    sample(&mut out, "forwarded_requests_total", stats.forwarded);
    family(
        &mut out,
        "conflicts_lost_total",
        "counter",
        "Sessions ended because another claim to their side won.",
    );
    sample(&mut out, "conflicts_lost_total", stats.conflicts_lost);
    family(
        &mut out,
        "peer_rtt_seconds",
        "gauge",
        "Last heartbeat round trip to each up peer.",
    );
    for (name, rtt) in rtts {
        if let Some(ms) = rtt {
            let secs = *ms as f64 / 1000.0;
            let _ = writeln!(
                out,
                "pairlink_peer_rtt_seconds{{peer=\"{name}\"}} {secs:.3}"
            );
        }
    }
    family(
        &mut out,
        "cluster_peers",
        "gauge",
        "Cluster peers, by state.",
    );
    for (state, n) in [
        ("up", peers.up),
        ("down", peers.down),
        ("connecting", peers.connecting),
    ] {
        let _ = writeln!(out, "pairlink_cluster_peers{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        "cluster_connections_refused_total",
        "counter",
        "Node-to-node connections closed still handshaking, to make room for newer ones.",
    );
    sample(
        &mut out,
        "cluster_connections_refused_total",
        metrics.cluster_connections_refused,
    );
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::NodeConfig;
    use crate::proto::ids::parse_node_name;

    #[test]
    fn exposition_is_well_formed() {
        let node: Node<()> = Node::new(NodeConfig {
            name: parse_node_name("n").unwrap(),
            peers: Vec::new(),
            lookup_timeout_ms: 1,
            session_ttl_ms: 1,
            poll_timeout_ms: 1,
            max_sessions: 1,
            max_session_buffer: 1,
            max_total_buffer: 1,
        });
        let mut m = Metrics {
            connections_open: 3,
            ..Metrics::default()
        };
        m.count_response(200);
        m.count_response(200);
        m.count_response(299);
        let text = String::from_utf8(render(&m, &node, PeerCounts::default(), &[("n2", Some(3))]))
            .unwrap();
        assert!(text.contains("pairlink_connections_open 3\n"));
        assert!(text.contains("pairlink_http_responses_total{status=\"200\"} 2\n"));
        assert!(text.contains("pairlink_http_responses_total{status=\"other\"} 1\n"));
        assert!(text.contains("pairlink_lookups_total{outcome=\"miss\"} 0\n"));
        assert!(text.contains("pairlink_cluster_peers{state=\"up\"} 0\n"));
        assert!(text.contains("pairlink_peer_rtt_seconds{peer=\"n2\"} 0.003\n"));
        assert!(text.contains("pairlink_cluster_connections_refused_total 0\n"));
        // Every sample belongs to a family announced just before it.
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line}");
            }
        }
    }
}
