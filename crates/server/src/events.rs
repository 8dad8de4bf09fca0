//! The event bus behind `subscribe_events`.
//!
//! A broadcast channel: publishing never blocks the supervisor, and a slow
//! subscriber that falls behind loses the oldest events (and is told so by
//! the gap in `seq`) instead of stalling everyone else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hero_livekit_proto::{Event, EventMessage};
use tokio::sync::broadcast;

use crate::metrics::Metrics;

/// Cheap to clone; every clone publishes into the same stream.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<EventMessage>,
    seq: Arc<AtomicU64>,
    /// Counted here, as each event is published, so that counters are
    /// exact whatever the subscribers do.
    metrics: Arc<Metrics>,
}

impl EventBus {
    /// `capacity` events are buffered per subscriber before the oldest drop;
    /// every event is counted in `metrics`.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        EventBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// Publishes an event; a no-op when nobody listens.
    pub fn publish(&self, event: Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        tracing::debug!(seq, ?event, "event");
        self.metrics.count_event(&event);
        // An error only means there is no subscriber right now.
        let _ = self.tx.send(EventMessage { seq, unix_ms, event });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventMessage> {
        self.tx.subscribe()
    }
}
