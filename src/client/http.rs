//! The client's HTTP source: the replica from the servers instead of the
//! database. It loads the bootstrap (`GET /api/v1/replica`), then follows
//! the change feed (`GET /api/v1/changes`) from its position, resuming by
//! position after any disconnect, on the same server or the next one listed
//! (jittered exponential backoff while none answers). A `reset` from a
//! server, or a resumption nobody can serve, reloads the bootstrap. At start
//! a sound snapshot file serves at once and the feed catches up from its
//! position.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::time::{sleep, timeout, Instant};

use super::snapshot::Image;
use super::source::{self, jittered, SnapshotSchedule, SourceConfig, BACKOFF_FIRST};
use super::wire::{self, ApplyError, ChangeRecord, KeyRecord, ValueRecord};
use super::{Origin, Shared};

/// The servers and the token to present.
pub struct Servers {
    pub urls: Vec<String>,
    pub token: Option<String>,
}

/// A feed that carries nothing, not even a heartbeat, for this long is
/// taken for dead (the servers send one every 15 s).
const SILENCE: Duration = Duration::from_secs(45);

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("a change did not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("a change could not be applied: {0:?}")]
    Apply(ApplyError),
    #[error("the image is invalid: {0}")]
    Image(String),
    #[error("the server asked for a reload")]
    Reset,
    #[error("the stream ended")]
    Ended,
    #[error("nothing came for {0:?}")]
    Silent(Duration),
    #[error("no answer within the load timeout")]
    Timeout,
}

struct Follower {
    shared: Arc<Shared>,
    servers: Servers,
    http: reqwest::Client,
    config: SourceConfig,
    /// Whether the replica holds a base (bootstrap or snapshot file) to
    /// resume after; else the next session loads the bootstrap.
    loaded: bool,
    snapshot: SnapshotSchedule,
}

pub async fn run(shared: Arc<Shared>, servers: Servers, config: SourceConfig, ready: oneshot::Sender<()>) {
    let http = reqwest::Client::builder().connect_timeout(config.load_timeout).build().unwrap_or_default();
    let mut follower = Follower { shared, servers, http, config, loaded: false, snapshot: SnapshotSchedule::new() };
    let mut ready = Some(ready);
    if source::restore_snapshot(&follower.shared, &follower.config) {
        follower.loaded = true;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
    }
    let mut backoff = BACKOFF_FIRST;
    let mut next = 0;
    loop {
        let url = follower.servers.urls[next % follower.servers.urls.len()].trim_end_matches('/').to_string();
        let (opened, error) = follower.session(&url, ready.take()).await;
        if matches!(error, FollowError::Reset) {
            follower.loaded = false;
            continue;
        }
        if opened {
            backoff = BACKOFF_FIRST;
        }
        tracing::warn!(server = %url, error = %error, "policy-values: server unreachable; serving from memory");
        follower.shared.mark_stale(OffsetDateTime::now_utc());
        next += 1;
        sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(follower.config.backoff_max);
    }
}

impl Follower {
    /// One connection to one server: bootstrap if needed, then follow until
    /// something fails; says whether the feed was opened. The first session
    /// signals `ready` once the replica serves, or fails within the load
    /// timeout (falling back to the catalog defaults if nothing serves).
    async fn session(&mut self, url: &str, ready: Option<oneshot::Sender<()>>) -> (bool, FollowError) {
        source::settle(&self.shared).await;
        let opened = match ready.is_some() {
            true => timeout(self.config.load_timeout, self.open(url)).await.unwrap_or(Err(FollowError::Timeout)),
            false => self.open(url).await,
        };
        let response = match opened {
            Ok(response) => response,
            Err(e) => {
                if let Some(ready) = ready {
                    if !self.loaded {
                        source::fall_back(&self.shared, &mut self.config);
                    }
                    let _ = ready.send(());
                }
                return (false, e);
            }
        };
        self.shared.set_origin(Origin::Live);
        self.shared.mark_fresh();
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        (true, self.follow(response).await)
    }

    /// Loads the bootstrap if there is no base, then opens the feed after
    /// the replica's position.
    async fn open(&mut self, url: &str) -> Result<reqwest::Response, FollowError> {
        if !self.loaded {
            self.bootstrap(url).await?;
        }
        let request = self
            .authorized(self.http.get(format!("{url}/api/v1/changes")))
            .header("last-event-id", self.shared.last_seq().to_string());
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(FollowError::Status { url: format!("{url}/api/v1/changes"), status: response.status() });
        }
        Ok(response)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.servers.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn bootstrap(&mut self, url: &str) -> Result<(), FollowError> {
        let started = std::time::Instant::now();
        let response = self.authorized(self.http.get(format!("{url}/api/v1/replica"))).send().await?;
        if !response.status().is_success() {
            return Err(FollowError::Status { url: format!("{url}/api/v1/replica"), status: response.status() });
        }
        let bytes = response.bytes().await?;
        let image: Image = serde_json::from_slice(&bytes)?;
        let restored = image.restore().map_err(|e| FollowError::Image(e.to_string()))?;
        let rows = restored.rows.len();
        {
            let _changing = self.shared.replica.changing();
            self.shared.replica.replace(restored.catalog, &restored.rows, restored.horizon);
            self.shared.set_last_seq(restored.last_seq);
            self.shared.set_horizon(restored.horizon);
        }
        self.loaded = true;
        self.snapshot.changed(&self.config);
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(server = %url, rows, position = restored.last_seq, ms, "policy-values: replica loaded from the bootstrap");
        Ok(())
    }

    /// Applies the feed's events until the stream fails; also flips
    /// scheduled changes, writes the snapshot file and publishes metrics.
    async fn follow(&mut self, mut response: reqwest::Response) -> FollowError {
        let mut events = EventBuffer::default();
        let mut reads_published = 0;
        let mut metrics_due = Instant::now();
        loop {
            if metrics_due <= Instant::now() {
                self.shared.publish_metrics(&mut reads_published);
                metrics_due = Instant::now() + Duration::from_secs(5);
            }
            let until_change =
                self.shared.replica.next_change().map(|t| (t - OffsetDateTime::now_utc()).max(time::Duration::ZERO));
            tokio::select! {
                chunk = timeout(SILENCE, response.chunk()) => {
                    let bytes = match chunk {
                        Err(_) => return FollowError::Silent(SILENCE),
                        Ok(Err(e)) => return e.into(),
                        Ok(Ok(None)) => return FollowError::Ended,
                        Ok(Ok(Some(bytes))) => bytes,
                    };
                    events.push(&bytes);
                    while let Some(event) = events.next() {
                        if let Err(e) = self.handle(&event) {
                            return e;
                        }
                    }
                    self.shared.publish_metrics(&mut reads_published);
                }
                () = sleep(until_change.map_or(Duration::MAX, |d| d.unsigned_abs())), if until_change.is_some() => {
                    self.shared.replica.recheck_schedules(OffsetDateTime::now_utc());
                }
                () = self.snapshot.wait(), if self.snapshot.is_due_set() => {
                    self.snapshot.write(&self.shared, &self.config).await;
                }
            }
        }
    }

    fn handle(&mut self, event: &Event) -> Result<(), FollowError> {
        let change = match event.name.as_str() {
            "value" => ChangeRecord::Value(serde_json::from_str::<ValueRecord>(&event.data)?),
            "key" => ChangeRecord::Key(serde_json::from_str::<KeyRecord>(&event.data)?),
            "reset" => return Err(FollowError::Reset),
            _ => return Ok(()),
        };
        if change.seq() <= self.shared.last_seq() {
            return Ok(());
        }
        wire::apply(&self.shared, &change).map_err(FollowError::Apply)?;
        self.snapshot.changed(&self.config);
        Ok(())
    }
}

/// One server-sent event (comments are dropped).
struct Event {
    name: String,
    data: String,
}

/// Splits a byte stream into events at blank lines.
#[derive(Default)]
struct EventBuffer {
    pending: Vec<u8>,
}

impl EventBuffer {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    fn next(&mut self) -> Option<Event> {
        loop {
            let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut event = Event { name: "message".into(), data: String::new() };
            let mut any = false;
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.name = name.to_string();
                    any = true;
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data.push_str(data);
                    any = true;
                }
            }
            if any {
                return Some(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_across_chunks_and_comments_are_dropped() {
        let mut buffer = EventBuffer::default();
        buffer.push(b": heartbeat\n\nid: 3\nevent: value\ndata: {\"a\"");
        assert!(buffer.next().is_none(), "a comment, then half an event");
        buffer.push(b":1}\n\nevent: reset\ndata: {}\n\n");
        let first = buffer.next().unwrap();
        assert_eq!((first.name.as_str(), first.data.as_str()), ("value", "{\"a\":1}"));
        assert_eq!(buffer.next().unwrap().name, "reset");
        assert!(buffer.next().is_none());
    }
}
