//! Where supervision events go.
//!
//! The daemon publishes events from several sources (supervision, heals,
//! configure, install) on one stream with one sequence counter, so the
//! supervisor does not stamp events itself: it hands bare
//! [`hero_livekit_proto::Event`]s to an [`EventSink`], a cheap cloneable
//! callback the daemon builds around its own stamping and broadcasting.
//! [`EventSink::broadcast`] is that callback ready-made for a
//! `tokio::sync::broadcast` channel.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hero_livekit_proto::{Event, EventMessage};
use tokio::sync::broadcast;

use super::record::unix_ms_now;

/// A callback receiving every event the supervisor emits. It is called from
/// the supervising task, so it must not block.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(Event) + Send + Sync>);

impl EventSink {
    /// A sink calling `f` for each event.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> EventSink {
        EventSink(Arc::new(f))
    }

    /// A sink dropping every event.
    pub fn discard() -> EventSink {
        EventSink::new(|_| {})
    }

    /// A sink wrapping each event in an [`EventMessage`] (next number of
    /// `seq`, current time) and sending it on `tx`. Share `seq` with every
    /// other producer on the same channel so numbers stay unique and ordered.
    /// Having no subscriber is not an error.
    pub fn broadcast(tx: broadcast::Sender<EventMessage>, seq: Arc<AtomicU64>) -> EventSink {
        EventSink::new(move |event| {
            let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = tx.send(EventMessage {
                seq,
                unix_ms: unix_ms_now(),
                event,
            });
        })
    }

    pub(crate) fn emit(&self, event: Event) {
        (self.0)(event);
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_livekit_proto::ProcessName;

    #[test]
    fn broadcast_sink_numbers_events_from_the_shared_counter() {
        let (tx, mut rx) = broadcast::channel(8);
        let seq = Arc::new(AtomicU64::new(41));
        let sink = EventSink::broadcast(tx, seq.clone());
        let event = Event::Restarted {
            process: ProcessName::LkBackend,
            reason: "test".into(),
        };
        sink.emit(event.clone());
        let msg = rx.try_recv().expect("one message");
        assert_eq!(msg.seq, 42);
        assert_eq!(msg.event, event);
        assert!(msg.unix_ms > 0);
        assert_eq!(seq.load(Ordering::Relaxed), 42);
    }
}
