//! Workflow events for watchers: numbered, kept in a bounded window, and
//! broadcast live.

use std::collections::VecDeque;
use std::sync::Mutex;

use toil_proto::v1::WorkflowEvent;
use toil_proto::v1::workflow_event::Kind;
use tokio::sync::broadcast;

/// How many recent events a late watcher can still catch up on.
const WINDOW: usize = 10_000;

/// The event log of one leader run.
pub struct EventHub {
    inner: Mutex<Inner>,
    live: broadcast::Sender<WorkflowEvent>,
}

struct Inner {
    next_seq: u64,
    recent: VecDeque<WorkflowEvent>,
    ended: bool,
}

/// What a new watcher gets: past events it asked for, then live ones.
pub struct Subscription {
    /// Events already recorded, after the requested sequence number.
    pub backlog: Vec<WorkflowEvent>,
    /// Live events; `None` when the workflow has already ended.
    pub live: Option<broadcast::Receiver<WorkflowEvent>>,
    /// The oldest sequence number still held, for "fell behind" messages.
    pub oldest: u64,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// An empty hub; the first event gets sequence number 1.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(4096);
        EventHub {
            inner: Mutex::new(Inner {
                next_seq: 1,
                recent: VecDeque::new(),
                ended: false,
            }),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event and sends it to watchers.
    pub fn publish(&self, kind: Kind) {
        let mut inner = self.lock();
        let event = WorkflowEvent {
            seq: inner.next_seq,
            time: Some(crate::core::now_timestamp()),
            kind: Some(kind),
        };
        inner.next_seq += 1;
        if matches!(event.kind, Some(Kind::WorkflowEnded(_))) {
            inner.ended = true;
        }
        if inner.recent.len() == WINDOW {
            inner.recent.pop_front();
        }
        inner.recent.push_back(event.clone());
        // Sent under the lock so a subscriber sees each event exactly once.
        let _ = self.live.send(event);
    }

    /// The number of the latest event (0 before the first): a snapshot
    /// taken with it is brought up to date by the events after it.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Subscribes, with every held event after `after_seq`.
    pub fn subscribe(&self, after_seq: u64) -> Subscription {
        let inner = self.lock();
        let backlog = inner
            .recent
            .iter()
            .filter(|e| e.seq > after_seq)
            .cloned()
            .collect();
        Subscription {
            backlog,
            live: (!inner.ended).then(|| self.live.subscribe()),
            oldest: inner.recent.front().map_or(inner.next_seq, |e| e.seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toil_proto::v1::{JobsAdded, WorkflowEnded};

    #[tokio::test]
    async fn late_watchers_catch_up_then_follow() {
        let hub = EventHub::new();
        hub.publish(Kind::JobsAdded(JobsAdded {
            job_ids: vec!["a".into()],
        }));
        hub.publish(Kind::JobsAdded(JobsAdded {
            job_ids: vec!["b".into()],
        }));
        let mut sub = hub.subscribe(1);
        assert_eq!(sub.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        hub.publish(Kind::WorkflowEnded(WorkflowEnded { state: 2 }));
        let live = sub.live.as_mut().expect("live");
        assert_eq!(live.recv().await.expect("event").seq, 3);
        let late = hub.subscribe(0);
        assert_eq!(late.backlog.len(), 3);
        assert!(late.live.is_none(), "nothing more will come");
    }
}
