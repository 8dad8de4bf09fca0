//! Where supervision events go.
//!
//! The daemon publishes events from several sources (supervision, heals,
//! configure, install) on one stream with one sequence counter, so the
//! supervisor does not stamp events itself: it hands bare
//! [`hero_livekit_proto::Event`]s to an [`EventSink`], a cheap cloneable
//! callback the daemon builds around its own stamping and broadcasting, e.g.
//! `EventSink::new(move |event| bus.publish(event))`.

use std::fmt;
use std::sync::Arc;

use hero_livekit_proto::Event;

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
    use std::sync::Mutex;

    #[test]
    fn every_clone_delivers_to_the_same_callback() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            EventSink::new(move |e| seen.lock().expect("lock").push(e))
        };
        let event = Event::Restarted {
            process: ProcessName::LkBackend,
            reason: "test".into(),
        };
        sink.clone().emit(event.clone());
        sink.emit(event.clone());
        assert_eq!(*seen.lock().expect("lock"), vec![event.clone(), event]);
        EventSink::discard().emit(Event::Restarted {
            process: ProcessName::LkBackend,
            reason: "x".into(),
        });
    }
}
