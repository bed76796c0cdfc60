//! `/metrics` in Prometheus text format: commands by type and result, group-commit batches, write latency,
//! the log's followers (up, lag, errors) and SSE clients.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use cohost_engine::{FollowerError, FollowerSnapshot, FollowerState, StatsSnapshot};
use cohost_proto::{Command, ErrorCode};

use crate::quota::Quotas;
use crate::serve::ConnectionStats;

/// A command's result: `ok`, or an error code.
const RESULTS: usize = 1 + ErrorCode::ALL.len();
const COMMANDS: usize = Command::NAMES.len();

/// The daemon's own counters. Counting a command is two atomic increments' worth of work, no lock: it happens
/// on every request.
#[derive(Debug)]
pub struct Metrics {
    /// `commands[command][result]`, in the order of `Command::NAMES` and `ok` then `ErrorCode::ALL`.
    commands: [[AtomicU64; RESULTS]; COMMANDS],
    /// Live collections (SSE streams) open now.
    pub sse_clients: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commands: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            sse_clients: AtomicI64::new(0),
        }
    }
}

fn result_name(index: usize) -> &'static str {
    index
        .checked_sub(1)
        .map_or("ok", |code| ErrorCode::ALL[code].as_str())
}

/// A follower of the log as `/healthz` and `/metrics` show it. On a cluster node, one per name summed over the
/// partitions the node owns: its state the worst of theirs, its lag and retries their sums, its last error the
/// latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerView {
    /// The follower's name (`relay`, `revoker`, `webhook:<id>`): its label in `/metrics`.
    pub name: &'static str,
    /// Following, retrying or stopped.
    pub state: FollowerState,
    /// Events in the log it has not handled yet.
    pub lag: u64,
    /// Failures so far, each retried.
    pub retries: u64,
    /// The latest failure, with its time.
    pub last_error: Option<FollowerError>,
    /// An outgoing webhook endpoint waiting, at an event it kept failing, for an operator's resume.
    pub paused: bool,
}

impl FollowerView {
    /// A single-node follower of a log that ends at `last_seq`.
    pub fn of(snapshot: &FollowerSnapshot, last_seq: u64) -> Self {
        Self {
            name: snapshot.name,
            state: snapshot.state,
            lag: snapshot.lag(last_seq),
            retries: snapshot.retries,
            last_error: snapshot.last_error.clone(),
            paused: false,
        }
    }

    /// The followers of several partitions' logs, each with the last seq of its own log, summed by name.
    pub fn summed(followers: impl IntoIterator<Item = (FollowerSnapshot, u64)>) -> Vec<Self> {
        let mut views: Vec<Self> = Vec::new();
        for (snapshot, last_seq) in followers {
            let view = Self::of(&snapshot, last_seq);
            let Some(sum) = views.iter_mut().find(|v| v.name == view.name) else {
                views.push(view);
                continue;
            };
            if worse(view.state, sum.state) {
                sum.state = view.state;
            }
            sum.lag += view.lag;
            sum.retries += view.retries;
            if view.last_error.as_ref().map(|e| e.at_ms) > sum.last_error.as_ref().map(|e| e.at_ms)
            {
                sum.last_error = view.last_error;
            }
        }
        views
    }
}

/// Whether `a` is a worse state to report than `b`: stopped, then retrying, then following.
fn worse(a: FollowerState, b: FollowerState) -> bool {
    let rank = |state| match state {
        FollowerState::Following => 0,
        FollowerState::Retrying => 1,
        FollowerState::Stopped => 2,
    };
    rank(a) > rank(b)
}

impl Metrics {
    /// Counts one command by name and result (`ok` or the error code's name); unknown names are not counted.
    pub fn command(&self, name: &str, result: &str) {
        let command = Command::NAMES.iter().position(|n| *n == name);
        let result = (0..RESULTS).find(|&r| result_name(r) == result);
        if let (Some(command), Some(result)) = (command, result) {
            self.commands[command][result].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The page, with one series per follower of the log that runs (`followers`).
    pub fn render(
        &self,
        engine: &StatsSnapshot,
        last_seq: u64,
        followers: &[FollowerView],
    ) -> String {
        let mut out = self.render_engine(engine);
        gauge(
            &mut out,
            "cohost_last_seq",
            "The last durable seq.",
            last_seq,
        );
        render_followers(&mut out, followers);
        self.render_sse_clients(&mut out);
        out
    }

    /// The page of a cluster node: the engine counters summed over the partitions it owns now (a partition
    /// that moves away takes its counts along, which Prometheus reads as a counter reset), and how many it
    /// serves (owned, with a valid lease).
    pub fn render_cluster(
        &self,
        engine: &StatsSnapshot,
        owned: usize,
        followers: &[FollowerView],
    ) -> String {
        let mut out = self.render_engine(engine);
        gauge(
            &mut out,
            "cohost_partitions_owned",
            "Partitions this node writes now (owned, with a lease valid by its clock).",
            owned,
        );
        render_followers(&mut out, followers);
        self.render_sse_clients(&mut out);
        out
    }

    /// Commands over HTTP, then the engine's counters and flush times.
    fn render_engine(&self, engine: &StatsSnapshot) -> String {
        let mut out = String::new();
        self.render_commands(&mut out);
        render_engine_counters(&mut out, engine);
        render_flush_histogram(&mut out, engine);
        out
    }

    fn render_sse_clients(&self, out: &mut String) {
        let clients = self.sse_clients.load(Ordering::Relaxed);
        gauge(out, "cohost_sse_clients", "Open live collections.", clients);
    }

    fn render_commands(&self, out: &mut String) {
        out.push_str(
            "# HELP cohost_commands_total Commands handled over HTTP, by command and result.\n",
        );
        out.push_str("# TYPE cohost_commands_total counter\n");
        let mut seen: Vec<(&str, &str, u64)> = Vec::new();
        for (command, results) in self.commands.iter().enumerate() {
            for (result, count) in results.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    seen.push((Command::NAMES[command], result_name(result), count));
                }
            }
        }
        seen.sort_unstable();
        for (name, result, count) in seen {
            let _ = writeln!(
                out,
                "cohost_commands_total{{command=\"{name}\",result=\"{result}\"}} {count}"
            );
        }
    }
}

/// One metric with its help and type lines.
fn metric(out: &mut String, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    metric(out, "gauge", name, help, value);
}

fn render_engine_counters(out: &mut String, engine: &StatsSnapshot) {
    let counters = [
        (
            "commands_ok",
            "Commands the engine applied.",
            engine.commands_ok,
        ),
        (
            "commands_rejected",
            "Commands the engine refused.",
            engine.commands_rejected,
        ),
        (
            "queue_full",
            "Commands refused because the queue was full.",
            engine.queue_full,
        ),
        (
            "batches",
            "Group commits (one write and one flush each).",
            engine.batches,
        ),
        (
            "batch_commands",
            "Commands decided in those batches.",
            engine.batch_commands,
        ),
        ("events", "Events appended.", engine.events),
    ];
    for (name, help, value) in counters {
        metric(
            out,
            "counter",
            &format!("cohost_engine_{name}_total"),
            help,
            value,
        );
    }
}

/// A follower's value in a series.
type FollowerValue = fn(&FollowerView) -> u64;

/// The relay's lag, then per follower of the log: whether it follows, how far behind it is, and how often it
/// failed.
fn render_followers(out: &mut String, followers: &[FollowerView]) {
    if let Some(relay) = followers
        .iter()
        .find(|f| f.name == cohost_nats::relay::FOLLOWER)
    {
        let help = "Events committed but not yet confirmed by NATS.";
        gauge(out, "cohost_relay_lag_events", help, relay.lag);
    }
    if followers.is_empty() {
        return;
    }
    let series: [(&str, &str, &str, FollowerValue); 4] = [
        (
            "cohost_follower_up",
            "gauge",
            "1 while the follower of the log follows it, 0 while it retries a failure (or has stopped).",
            |f| u64::from(f.state == FollowerState::Following),
        ),
        (
            "cohost_follower_lag_events",
            "gauge",
            "Events in the log the follower has not handled yet.",
            |f| f.lag,
        ),
        (
            "cohost_follower_errors_total",
            "counter",
            "Failures of the follower (a log read, NATS, LiveKit, a cursor write), each retried.",
            |f| f.retries,
        ),
        (
            "cohost_follower_paused",
            "gauge",
            "1 while an outgoing webhook endpoint waits, at an event it kept failing, for an operator's resume.",
            |f| u64::from(f.paused),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for follower in followers {
            let value = value(follower);
            let _ = writeln!(out, "{name}{{follower=\"{}\"}} {value}", follower.name);
        }
    }
}

/// A cluster node's leases and takeovers.
pub fn render_node(out: &mut String, stats: &cohost_nats::cluster::NodeStats) {
    let count = |value: &AtomicU64| value.load(Ordering::Relaxed);
    let series = [
        (
            "cohost_lease_renewals_total",
            "Lease renewals that succeeded.",
            count(&stats.renewals),
        ),
        (
            "cohost_lease_renewals_failed_total",
            "Lease renewals that failed on the way (the partition is kept until its lease runs out).",
            count(&stats.renewals_failed),
        ),
        (
            "cohost_leases_lost_total",
            "Leases found taken by another node.",
            count(&stats.leases_lost),
        ),
        (
            "cohost_takeovers_total",
            "Partitions taken over and served.",
            count(&stats.takeovers),
        ),
        (
            "cohost_takeovers_failed_total",
            "Takeovers that failed (tried again).",
            count(&stats.takeovers_failed),
        ),
        (
            "cohost_partitions_given_up_total",
            "Partitions given up: lost, handed off, or their engine stopped.",
            count(&stats.given_up),
        ),
        (
            "cohost_takeovers_from_snapshot_total",
            "Takeovers that started from the partition's snapshot and replayed only the log after it.",
            count(&stats.takeovers_from_snapshot),
        ),
        (
            "cohost_partition_snapshots_saved_total",
            "Partition snapshots saved for the next owner.",
            count(&stats.snapshots_saved),
        ),
        (
            "cohost_partition_snapshots_failed_total",
            "Partition snapshot saves that failed (tried again next turn).",
            count(&stats.snapshots_failed),
        ),
    ];
    for (name, help, value) in series {
        metric(out, "counter", name, help, value);
    }
    let seconds = count(&stats.takeover_us) as f64 / 1e6;
    let help = "Time from a lease taken to the partition served, summed over the takeovers.";
    metric(
        out,
        "counter",
        "cohost_takeover_seconds_total",
        help,
        seconds,
    );
}

/// A cluster node's forwarded requests: answered by the owner or not, and the owner's answer time.
pub fn render_forwards(out: &mut String, forwards: &crate::forward::Forwards) {
    let answered = forwards.answered.load(Ordering::Relaxed);
    let unanswered = forwards.unanswered.load(Ordering::Relaxed);
    out.push_str(
        "# HELP cohost_forwarded_requests_total Room requests sent to the partition's owner, by whether an owner answered before the deadline.\n",
    );
    out.push_str("# TYPE cohost_forwarded_requests_total counter\n");
    let _ = writeln!(
        out,
        "cohost_forwarded_requests_total{{result=\"answered\"}} {answered}"
    );
    let _ = writeln!(
        out,
        "cohost_forwarded_requests_total{{result=\"unanswered\"}} {unanswered}"
    );
    let seconds = forwards.answered_us.load(Ordering::Relaxed) as f64 / 1e6;
    metric(
        out,
        "counter",
        "cohost_forwarded_answer_seconds_total",
        "Time from forwarding to the owner's answer, summed over the answered requests.",
        seconds,
    );
}

/// What reads of the log cost, and what the per-user quotas refused.
pub fn render_reads_and_quotas(out: &mut String, records_read: u64, quotas: &Quotas) {
    let help = "Log records decoded for readers (catch-ups, room and event reads).";
    metric(
        out,
        "counter",
        "cohost_log_records_read_total",
        help,
        records_read,
    );
    out.push_str(
        "# HELP cohost_quota_refusals_total Requests a per-user quota refused (429), by quota.\n",
    );
    out.push_str("# TYPE cohost_quota_refusals_total counter\n");
    let refusals = &quotas.refusals;
    for (quota, count) in [
        ("commands", &refusals.commands),
        ("invitations", &refusals.invitations),
        ("streams_per_user", &refusals.streams_per_user),
        ("streams_total", &refusals.streams_total),
    ] {
        let count = count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "cohost_quota_refusals_total{{quota=\"{quota}\"}} {count}"
        );
    }
}

/// The connection loop's counters.
pub fn render_connections(out: &mut String, connections: &ConnectionStats) {
    let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
    gauge(
        out,
        "cohost_http_connections_open",
        "Open HTTP connections.",
        read(&connections.open),
    );
    let counters = [
        (
            "accepted",
            "HTTP connections accepted.",
            &connections.accepted,
        ),
        (
            "at_cap",
            "Times the connection cap was reached and accepting waited for a connection to close.",
            &connections.at_cap,
        ),
        (
            "accept_errors",
            "Failed accepts (such as running out of file descriptors).",
            &connections.accept_errors,
        ),
    ];
    for (name, help, value) in counters {
        let name = format!("cohost_http_connections_{name}_total");
        metric(out, "counter", &name, help, read(value));
    }
}

fn render_flush_histogram(out: &mut String, engine: &StatsSnapshot) {
    out.push_str("# HELP cohost_engine_flush_seconds Time to write and flush one batch.\n");
    out.push_str("# TYPE cohost_engine_flush_seconds histogram\n");
    let mut cumulative = 0;
    for (le_us, count) in engine.flush_us_buckets.iter() {
        cumulative += count;
        let le = *le_us as f64 / 1e6;
        let _ = writeln!(
            out,
            "cohost_engine_flush_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let (batches, sum) = (engine.batches, engine.flush_us_total as f64 / 1e6);
    let _ = writeln!(
        out,
        "cohost_engine_flush_seconds_bucket{{le=\"+Inf\"}} {batches}\ncohost_engine_flush_seconds_sum {sum}\ncohost_engine_flush_seconds_count {batches}"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cohost_engine::{
        FLUSH_BUCKETS_US, FollowerError, FollowerSnapshot, FollowerState, StatsSnapshot,
    };

    use super::{FollowerView, Metrics};

    /// The relay following 5 events behind a log at seq 42 after two failures; the revoker retrying, 12 behind.
    fn followers() -> [FollowerSnapshot; 2] {
        let relay = FollowerSnapshot {
            name: "relay",
            state: FollowerState::Following,
            handled_seq: 37,
            retries: 2,
            last_error: None,
        };
        let last_error = Some(FollowerError {
            message: "LiveKit is down".into(),
            at_ms: 1_700_000_000_000,
        });
        let revoker = FollowerSnapshot {
            name: "revoker",
            state: FollowerState::Retrying,
            handled_seq: 30,
            retries: 7,
            last_error,
        };
        [relay, revoker]
    }

    #[test]
    fn renders_the_prometheus_text_exactly() {
        let metrics = Metrics::default();
        metrics.command("invite", "ok");
        metrics.command("invite", "ok");
        metrics.command("accept_invitation", "failed_precondition");
        metrics.sse_clients.store(3, Ordering::Relaxed);
        let stats = StatsSnapshot {
            commands_ok: 7,
            commands_rejected: 2,
            queue_full: 1,
            batches: 4,
            batch_commands: 9,
            events: 11,
            flush_us_total: 1_500,
            flush_us_max: 900,
            flush_us_buckets: std::array::from_fn(|i| (FLUSH_BUCKETS_US[i], i as u64)),
        };
        let want = r#"# HELP cohost_commands_total Commands handled over HTTP, by command and result.
# TYPE cohost_commands_total counter
cohost_commands_total{command="accept_invitation",result="failed_precondition"} 1
cohost_commands_total{command="invite",result="ok"} 2
# HELP cohost_engine_commands_ok_total Commands the engine applied.
# TYPE cohost_engine_commands_ok_total counter
cohost_engine_commands_ok_total 7
# HELP cohost_engine_commands_rejected_total Commands the engine refused.
# TYPE cohost_engine_commands_rejected_total counter
cohost_engine_commands_rejected_total 2
# HELP cohost_engine_queue_full_total Commands refused because the queue was full.
# TYPE cohost_engine_queue_full_total counter
cohost_engine_queue_full_total 1
# HELP cohost_engine_batches_total Group commits (one write and one flush each).
# TYPE cohost_engine_batches_total counter
cohost_engine_batches_total 4
# HELP cohost_engine_batch_commands_total Commands decided in those batches.
# TYPE cohost_engine_batch_commands_total counter
cohost_engine_batch_commands_total 9
# HELP cohost_engine_events_total Events appended.
# TYPE cohost_engine_events_total counter
cohost_engine_events_total 11
# HELP cohost_engine_flush_seconds Time to write and flush one batch.
# TYPE cohost_engine_flush_seconds histogram
cohost_engine_flush_seconds_bucket{le="0.0001"} 0
cohost_engine_flush_seconds_bucket{le="0.00025"} 1
cohost_engine_flush_seconds_bucket{le="0.0005"} 3
cohost_engine_flush_seconds_bucket{le="0.001"} 6
cohost_engine_flush_seconds_bucket{le="0.0025"} 10
cohost_engine_flush_seconds_bucket{le="0.005"} 15
cohost_engine_flush_seconds_bucket{le="0.01"} 21
cohost_engine_flush_seconds_bucket{le="0.025"} 28
cohost_engine_flush_seconds_bucket{le="0.1"} 36
cohost_engine_flush_seconds_bucket{le="+Inf"} 4
cohost_engine_flush_seconds_sum 0.0015
cohost_engine_flush_seconds_count 4
# HELP cohost_last_seq The last durable seq.
# TYPE cohost_last_seq gauge
cohost_last_seq 42
# HELP cohost_relay_lag_events Events committed but not yet confirmed by NATS.
# TYPE cohost_relay_lag_events gauge
cohost_relay_lag_events 5
# HELP cohost_follower_up 1 while the follower of the log follows it, 0 while it retries a failure (or has stopped).
# TYPE cohost_follower_up gauge
cohost_follower_up{follower="relay"} 1
cohost_follower_up{follower="revoker"} 0
# HELP cohost_follower_lag_events Events in the log the follower has not handled yet.
# TYPE cohost_follower_lag_events gauge
cohost_follower_lag_events{follower="relay"} 5
cohost_follower_lag_events{follower="revoker"} 12
# HELP cohost_follower_errors_total Failures of the follower (a log read, NATS, LiveKit, a cursor write), each retried.
# TYPE cohost_follower_errors_total counter
cohost_follower_errors_total{follower="relay"} 2
cohost_follower_errors_total{follower="revoker"} 7
# HELP cohost_follower_paused 1 while an outgoing webhook endpoint waits, at an event it kept failing, for an operator's resume.
# TYPE cohost_follower_paused gauge
cohost_follower_paused{follower="relay"} 0
cohost_follower_paused{follower="revoker"} 0
# HELP cohost_sse_clients Open live collections.
# TYPE cohost_sse_clients gauge
cohost_sse_clients 3
"#;
        let views = followers().map(|f| FollowerView::of(&f, 42));
        assert_eq!(metrics.render(&stats, 42, &views), want);
    }

    /// Two partitions' relays: one following 3 behind, one retrying 4 behind with a newer error.
    #[test]
    fn a_cluster_node_sums_its_partitions_followers_by_name() {
        let [relay, _] = followers();
        let older = FollowerError {
            message: "NATS is slow".into(),
            at_ms: 1_600_000_000_000,
        };
        let newer = FollowerError {
            message: "NATS is down".into(),
            at_ms: 1_700_000_000_000,
        };
        let first = FollowerSnapshot {
            last_error: Some(older),
            ..relay.clone()
        };
        let second = FollowerSnapshot {
            state: FollowerState::Retrying,
            handled_seq: 6,
            retries: 1,
            last_error: Some(newer.clone()),
            ..relay
        };
        let views = FollowerView::summed([(first, 40), (second, 10)]);
        let want = FollowerView {
            name: "relay",
            state: FollowerState::Retrying,
            lag: 3 + 4,
            retries: 2 + 1,
            last_error: Some(newer),
            paused: false,
        };
        assert_eq!(views, [want]);
        let page = Metrics::default().render_cluster(&StatsSnapshot::default(), 2, &views);
        assert!(page.contains("cohost_relay_lag_events 7\n"), "{page}");
        assert!(
            page.contains("cohost_follower_up{follower=\"relay\"} 0\n"),
            "{page}"
        );
    }

    #[test]
    fn without_followers_the_page_has_no_follower_series() {
        let page = Metrics::default().render(&StatsSnapshot::default(), 42, &[]);
        assert!(page.contains("cohost_last_seq 42"));
        assert!(!page.contains("cohost_follower_"), "{page}");
        assert!(!page.contains("cohost_relay_lag_events"), "{page}");
    }
}
