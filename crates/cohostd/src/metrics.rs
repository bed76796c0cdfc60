//! `/metrics` in Prometheus text format: commands by type and result, group-commit batches, write latency,
//! relay lag and SSE clients.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use cohost_engine::StatsSnapshot;

#[derive(Debug, Default)]
pub struct Metrics {
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub sse_clients: AtomicI64,
}

impl Metrics {
    /// Counts one command by name and result (`ok` or the error code).
    pub fn command(&self, name: &'static str, result: &'static str) {
        *self
            .commands
            .lock()
            .expect("metrics lock is never poisoned")
            .entry((name, result))
            .or_default() += 1;
    }

    pub fn render(&self, engine: &StatsSnapshot, last_seq: u64, relay_lag: Option<u64>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP cohost_commands_total Commands handled over HTTP, by command and result.\n",
        );
        out.push_str("# TYPE cohost_commands_total counter\n");
        for ((name, result), count) in self
            .commands
            .lock()
            .expect("metrics lock is never poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "cohost_commands_total{{command=\"{name}\",result=\"{result}\"}} {count}"
            );
        }
        let counters = [
            (
                "cohost_engine_commands_ok_total",
                "Commands the engine applied.",
                engine.commands_ok,
            ),
            (
                "cohost_engine_commands_rejected_total",
                "Commands the engine refused.",
                engine.commands_rejected,
            ),
            (
                "cohost_engine_queue_full_total",
                "Commands refused because the queue was full.",
                engine.queue_full,
            ),
            (
                "cohost_engine_batches_total",
                "Group commits (one write and one flush each).",
                engine.batches,
            ),
            (
                "cohost_engine_batch_commands_total",
                "Commands decided in those batches.",
                engine.batch_commands,
            ),
            (
                "cohost_engine_events_total",
                "Events appended.",
                engine.events,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out.push_str("# HELP cohost_engine_flush_seconds Time to write and flush one batch.\n");
        out.push_str("# TYPE cohost_engine_flush_seconds histogram\n");
        let mut cumulative = 0;
        for (le_us, count) in engine.flush_us_buckets.iter() {
            cumulative += count;
            let _ = writeln!(
                out,
                "cohost_engine_flush_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *le_us as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "cohost_engine_flush_seconds_bucket{{le=\"+Inf\"}} {}",
            engine.batches
        );
        let _ = writeln!(
            out,
            "cohost_engine_flush_seconds_sum {}",
            engine.flush_us_total as f64 / 1e6
        );
        let _ = writeln!(out, "cohost_engine_flush_seconds_count {}", engine.batches);
        let _ = writeln!(
            out,
            "# HELP cohost_last_seq The last durable seq.\n# TYPE cohost_last_seq gauge\ncohost_last_seq {last_seq}"
        );
        if let Some(lag) = relay_lag {
            let _ = writeln!(
                out,
                "# HELP cohost_relay_lag_events Events committed but not yet confirmed by NATS.\n# TYPE cohost_relay_lag_events gauge\ncohost_relay_lag_events {lag}"
            );
        }
        let clients = self.sse_clients.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP cohost_sse_clients Open live collections.\n# TYPE cohost_sse_clients gauge\ncohost_sse_clients {clients}"
        );
        out
    }
}
