//! The change feed's hub: every change the server's replica applies becomes
//! one server-sent event, serialized once and shared by every subscriber.
//! The hub keeps the most recent events in a ring, so a subscriber that
//! reconnects with its last event id gets exactly what it missed; one that
//! missed more than the ring holds is told to reset (reload the bootstrap).
//! Subscribers read a broadcast channel: no database query per subscriber,
//! and one that falls too far behind is disconnected, to resume by id.

use std::collections::VecDeque;
use std::sync::RwLock;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::broadcast;

use crate::client::wire::{ChangeObserver, ChangeRecord};

/// The feed's sizes and pace.
#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// Events held for resuming subscribers.
    pub ring: usize,
    /// Events a subscriber may fall behind the newest before it is cut off.
    pub lag: usize,
    /// How often every stream carries a comment, so proxies keep it open.
    pub heartbeat: Duration,
}

impl Default for FeedConfig {
    fn default() -> FeedConfig {
        FeedConfig { ring: 10_000, lag: 4_096, heartbeat: Duration::from_secs(15) }
    }
}

/// One event, ready to write: its position (0 for a heartbeat) and bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: i64,
    pub bytes: Bytes,
}

struct Ring {
    frames: VecDeque<Frame>,
    /// Every change after this position is in `frames` (once loaded).
    horizon: i64,
    /// The position of the newest change applied.
    last: i64,
    loaded: bool,
}

pub struct Feed {
    ring: RwLock<Ring>,
    live: broadcast::Sender<Frame>,
    capacity: usize,
    /// Set when the server shuts down: no new subscription, and the open
    /// ones end (their subscribers resume by id elsewhere).
    closed: std::sync::atomic::AtomicBool,
}

/// The position of the frame that ends every subscription: the server is
/// shutting down. It is never written to a subscriber.
pub const CLOSING: i64 = -1;

/// Where a new subscription starts.
pub enum Start {
    /// The events it missed, then live ones after `after`.
    Resume { backlog: Vec<Frame>, live: broadcast::Receiver<Frame>, after: i64 },
    /// What it missed is no longer held: reload, then follow from `horizon`.
    Reset { horizon: i64 },
    /// The replica is not loaded yet.
    NotReady,
    /// The server is shutting down.
    Closed,
}

impl Feed {
    pub fn new(config: FeedConfig) -> Feed {
        Feed {
            ring: RwLock::new(Ring { frames: VecDeque::new(), horizon: 0, last: 0, loaded: false }),
            live: broadcast::channel(config.lag.max(1)).0,
            capacity: config.ring.max(1),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends every open subscription and refuses new ones: the server is
    /// shutting down, and a stream that never ends would hold its graceful
    /// shutdown forever.
    pub fn close(&self) {
        let _ring = self.write();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.live.send(Frame { seq: CLOSING, bytes: Bytes::new() });
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A subscription after position `after` (`None`: from now on).
    pub fn subscribe(&self, after: Option<i64>) -> Start {
        // Under the lock, so no event falls between the backlog and the
        // live channel: `applied` appends and sends under the write lock.
        let ring = self.read();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Start::Closed;
        }
        if !ring.loaded {
            return Start::NotReady;
        }
        let after = after.unwrap_or(ring.last);
        if after < ring.horizon {
            return Start::Reset { horizon: ring.horizon };
        }
        let first = ring.frames.partition_point(|f| f.seq <= after);
        let backlog = ring.frames.range(first..).cloned().collect();
        Start::Resume { backlog, live: self.live.subscribe(), after }
    }

    /// The newest position applied, and the oldest a subscriber may resume
    /// after without a reset.
    pub fn positions(&self) -> (i64, i64) {
        let ring = self.read();
        (ring.last, ring.horizon)
    }

    /// Changes read from the database at start, older than anything held:
    /// held too, so subscribers that resume after a restart need no reset.
    pub fn backfill(&self, changes: &[ChangeRecord], horizon: i64) {
        let mut ring = self.write();
        let older: Vec<Frame> = changes
            .iter()
            .filter(|c| c.seq() > horizon && c.seq() <= ring.horizon)
            .filter_map(|c| frame(c).ok())
            .collect();
        if !ring.loaded || horizon >= ring.horizon {
            return;
        }
        let room = self.capacity.saturating_sub(ring.frames.len());
        let skip = older.len().saturating_sub(room);
        let kept = &older[skip..];
        ring.horizon = if skip > 0 { older[skip - 1].seq } else { horizon };
        for f in kept.iter().rev() {
            ring.frames.push_front(f.clone());
        }
    }

    /// Sends a heartbeat comment to every subscriber.
    pub fn heartbeat(&self) {
        let _ = self.live.send(Frame { seq: 0, bytes: Bytes::from_static(b": heartbeat\n\n") });
    }
}

impl ChangeObserver for Feed {
    fn loaded(&self, position: i64) {
        let mut ring = self.write();
        ring.frames.clear();
        ring.horizon = position;
        ring.last = position;
        ring.loaded = true;
    }

    fn applied(&self, change: &ChangeRecord) {
        let Ok(frame) = frame(change) else {
            tracing::error!(seq = change.seq(), "a change could not be serialized for the feed");
            return;
        };
        let mut ring = self.write();
        if !ring.loaded || change.seq() <= ring.last {
            return;
        }
        ring.last = change.seq();
        ring.frames.push_back(frame.clone());
        while ring.frames.len() > self.capacity {
            if let Some(dropped) = ring.frames.pop_front() {
                ring.horizon = dropped.seq;
            }
        }
        let _ = self.live.send(frame);
    }
}

/// `id: <seq>`, `event: value|key`, `data: <the change as JSON>`.
pub fn frame(change: &ChangeRecord) -> Result<Frame, serde_json::Error> {
    let (event, data) = match change {
        ChangeRecord::Value(v) => ("value", serde_json::to_string(v)?),
        ChangeRecord::Key(k) => ("key", serde_json::to_string(k)?),
    };
    let text = format!("id: {}\nevent: {event}\ndata: {data}\n\n", change.seq());
    Ok(Frame { seq: change.seq(), bytes: Bytes::from(text) })
}

/// The event that tells a subscriber to reload the bootstrap.
pub fn reset_frame(horizon: i64) -> Bytes {
    Bytes::from(format!(
        "event: reset\ndata: {{\"reason\":\"the changes after your position are no longer held; reload GET /api/v1/replica\",\"horizon\":{horizon}}}\n\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::wire::{RecordKind, ValueRecord};

    fn change(seq: i64) -> ChangeRecord {
        ChangeRecord::Value(ValueRecord {
            seq,
            id: uuid::Uuid::from_u64_pair(0, seq as u64),
            kind: RecordKind::Set,
            key: "a.b".into(),
            level: "org".into(),
            scope_id: "acme".into(),
            value: Some(serde_json::json!(seq)),
            effective_at: time::OffsetDateTime::UNIX_EPOCH,
            cancels_seq: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    fn backlog(start: Start) -> Vec<i64> {
        match start {
            Start::Resume { backlog, .. } => backlog.iter().map(|f| f.seq).collect(),
            Start::Reset { horizon } => vec![-horizon],
            Start::NotReady => vec![i64::MIN],
            Start::Closed => vec![i64::MAX],
        }
    }

    #[test]
    fn a_subscriber_gets_what_it_missed_and_a_reset_when_the_ring_no_longer_holds_it() {
        let feed = Feed::new(FeedConfig { ring: 3, ..FeedConfig::default() });
        assert!(matches!(feed.subscribe(Some(0)), Start::NotReady));
        feed.loaded(10);
        for seq in [11, 13, 14, 17] {
            feed.applied(&change(seq));
        }
        assert_eq!(backlog(feed.subscribe(Some(13))), [14, 17]);
        assert_eq!(backlog(feed.subscribe(Some(11))), [13, 14, 17], "11 was dropped, but nothing after it");
        assert_eq!(backlog(feed.subscribe(Some(10))), [-11], "11 is no longer held");
        assert_eq!(backlog(feed.subscribe(Some(20))), Vec::<i64>::new(), "ahead of this server: wait");
        assert_eq!(backlog(feed.subscribe(None)), Vec::<i64>::new());
        feed.applied(&change(17));
        assert_eq!(feed.positions(), (17, 11), "a change applied twice is published once");
        let Start::Resume { mut live, .. } = feed.subscribe(Some(17)) else { panic!("a live subscription") };
        feed.close();
        assert_eq!(live.try_recv().map(|f| f.seq).ok(), Some(CLOSING), "an open subscription is told to end");
        assert_eq!(backlog(feed.subscribe(Some(17))), [i64::MAX], "a closed feed takes no subscription");
    }

    #[test]
    fn backfilled_changes_extend_the_ring_backwards() {
        let feed = Feed::new(FeedConfig { ring: 4, ..FeedConfig::default() });
        feed.loaded(10);
        feed.applied(&change(12));
        feed.backfill(&[change(7), change(9), change(10)], 5);
        assert_eq!(backlog(feed.subscribe(Some(5))), [7, 9, 10, 12]);
        let feed = Feed::new(FeedConfig { ring: 3, ..FeedConfig::default() });
        feed.loaded(10);
        feed.applied(&change(12));
        feed.backfill(&[change(7), change(9), change(10)], 5);
        assert_eq!(backlog(feed.subscribe(Some(8))), [9, 10, 12], "only as much as fits");
        assert_eq!(backlog(feed.subscribe(Some(6))), [-7]);
    }

    #[test]
    fn a_frame_is_one_server_sent_event_with_its_position_as_id() {
        let text = String::from_utf8(frame(&change(42)).unwrap().bytes.to_vec()).unwrap();
        assert!(text.starts_with("id: 42\nevent: value\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["seq"], 42);
        assert_eq!(data["kind"], "set");
    }
}
