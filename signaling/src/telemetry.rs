//! Metrics: what an operator needs to see that the server is healthy and how it is used.
//!
//! Recorded through the `metrics` facade and rendered in the Prometheus text format by
//! `metrics-exporter-prometheus` at `GET /metrics`. The recorder is process-global (the
//! facade's design), so several servers started in one process (as in the tests) share
//! one set of counters; gauges move by increments so they stay correct even then.

use std::sync::{LazyLock, OnceLock};

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rhizome::signal::ErrorCode;

/// Open WebSocket sessions (joined or not).
pub const SESSIONS: &str = "rhizome_signaling_sessions";
/// Rooms with at least one member.
pub const ROOMS: &str = "rhizome_signaling_rooms";
/// Sessions that are members of a room.
pub const MEMBERS: &str = "rhizome_signaling_members";
/// WebSocket sessions accepted since start.
pub const CONNECTIONS: &str = "rhizome_signaling_connections_total";
/// WebSocket upgrades refused because `max_sessions` was reached.
pub const REFUSED: &str = "rhizome_signaling_refused_connections_total";
/// Successful joins (including replacements).
pub const JOINS: &str = "rhizome_signaling_joins_total";
/// Joins that replaced an older session of the same peer.
pub const REPLACEMENTS: &str = "rhizome_signaling_replacements_total";
/// Signals queued for delivery to their target.
pub const RELAYED: &str = "rhizome_signaling_signals_relayed_total";
/// Error frames sent, labelled by `code`.
pub const ERRORS: &str = "rhizome_signaling_errors_total";
/// Open TCP connections (sessions included).
pub const OPEN_CONNECTIONS: &str = "rhizome_signaling_open_connections";
/// Connections closed by the connection cap, labelled by `reason`: `evicted` (an idle
/// connection dropped to make room) or `full` (a new one closed at once).
pub const DROPPED: &str = "rhizome_signaling_dropped_connections_total";

/// 1 while a server of this process has lost its cluster (Redis) and serves its own
/// sessions alone (one per degraded server when several run in one process).
pub const CLUSTER_DEGRADED: &str = "rhizome_signaling_cluster_degraded";
/// Times a server lost its cluster (Redis unreachable, subscription dropped).
pub const CLUSTER_DEGRADATIONS: &str = "rhizome_signaling_cluster_degradations_total";
/// Times a server (re-)joined its cluster and published its members.
pub const CLUSTER_REJOINS: &str = "rhizome_signaling_cluster_rejoins_total";
/// Signals relayed through the cluster, by `direction`: `out` (sent to the server
/// holding the target) or `in` (delivered here for a sender on another server).
pub const CLUSTER_RELAYED: &str = "rhizome_signaling_cluster_relayed_total";
/// Malformed messages read from the cluster's channel (dropped).
pub const CLUSTER_MALFORMED: &str = "rhizome_signaling_cluster_malformed_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle, or `None`
/// if the embedding program installed another recorder first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe_gauge!(SESSIONS, "Open WebSocket sessions");
            describe_gauge!(ROOMS, "Rooms with at least one member");
            describe_gauge!(MEMBERS, "Sessions that joined a room");
            describe_counter!(CONNECTIONS, "WebSocket sessions accepted");
            describe_counter!(REFUSED, "WebSocket upgrades refused (server full)");
            describe_counter!(JOINS, "Successful joins");
            describe_counter!(REPLACEMENTS, "Joins that replaced a stale session");
            describe_counter!(RELAYED, "Signals relayed");
            describe_counter!(ERRORS, "Error frames sent, by code");
            describe_gauge!(OPEN_CONNECTIONS, "Open TCP connections, sessions included");
            describe_counter!(
                DROPPED,
                "Connections closed by the connection cap, by reason"
            );
            describe_gauge!(CLUSTER_DEGRADED, "Servers serving alone for want of Redis");
            describe_counter!(CLUSTER_DEGRADATIONS, "Times the cluster (Redis) was lost");
            describe_counter!(CLUSTER_REJOINS, "Times the cluster was joined again");
            describe_counter!(CLUSTER_RELAYED, "Signals relayed between servers");
            describe_counter!(CLUSTER_MALFORMED, "Malformed cluster messages dropped");
            // Make the gauges and totals visible from the first scrape.
            gauge!(SESSIONS).increment(0.0);
            gauge!(ROOMS).increment(0.0);
            gauge!(MEMBERS).increment(0.0);
            gauge!(OPEN_CONNECTIONS).increment(0.0);
            for name in [CONNECTIONS, JOINS, RELAYED] {
                counter!(name).increment(0);
            }
            Some(handle)
        })
        .as_ref()
}

/// A session opened.
pub fn session_opened() {
    counter!(CONNECTIONS).increment(1);
    gauge!(SESSIONS).increment(1.0);
}

/// A session ended.
pub fn session_closed() {
    gauge!(SESSIONS).decrement(1.0);
}

/// An upgrade was refused for lack of session slots.
pub fn session_refused() {
    counter!(REFUSED).increment(1);
}

/// A room was created.
pub fn room_opened() {
    gauge!(ROOMS).increment(1.0);
}

/// A room emptied and was dropped.
pub fn room_closed() {
    gauge!(ROOMS).decrement(1.0);
}

/// A session joined a room.
pub fn joined(replaced: bool) {
    counter!(JOINS).increment(1);
    if replaced {
        counter!(REPLACEMENTS).increment(1);
    } else {
        gauge!(MEMBERS).increment(1.0);
    }
}

/// A joined session left its room (closed or replaced).
pub fn left() {
    gauge!(MEMBERS).decrement(1.0);
}

/// A signal was queued for its target. The hot path: the counter handle is looked up
/// once (after [`handle`] installed the recorder, which `serve` does first).
pub fn relayed() {
    static RELAYED_COUNTER: LazyLock<Counter> = LazyLock::new(|| counter!(RELAYED));
    RELAYED_COUNTER.increment(1);
}

/// An error frame was sent.
pub fn error(code: ErrorCode) {
    counter!(ERRORS, "code" => code.as_str()).increment(1);
}

/// A TCP connection was accepted.
pub fn connection_opened() {
    gauge!(OPEN_CONNECTIONS).increment(1.0);
}

/// A TCP connection closed (or the session it became ended).
pub fn connection_closed() {
    gauge!(OPEN_CONNECTIONS).decrement(1.0);
}

/// The connection cap closed a connection (`reason`: `evicted` or `full`).
pub fn connection_dropped(reason: &'static str) {
    counter!(DROPPED, "reason" => reason).increment(1);
}

/// The server lost (`true`) or regained (`false`) its cluster.
pub fn cluster_degraded(lost: bool) {
    if lost {
        counter!(CLUSTER_DEGRADATIONS).increment(1);
        gauge!(CLUSTER_DEGRADED).increment(1.0);
    } else {
        gauge!(CLUSTER_DEGRADED).decrement(1.0);
    }
}

/// The server published its members to the cluster again after an outage.
pub fn cluster_rejoined() {
    counter!(CLUSTER_REJOINS).increment(1);
}

/// A signal crossed servers (`direction`: `out` or `in`).
pub fn cluster_relayed(direction: &'static str) {
    counter!(CLUSTER_RELAYED, "direction" => direction).increment(1);
}

/// A malformed cluster message was dropped.
pub fn cluster_malformed() {
    counter!(CLUSTER_MALFORMED).increment(1);
}
