//! A minimal server-sent events reader over reqwest, as a service in any
//! language would follow `GET /api/v1/changes`.
#![allow(dead_code)]

use std::time::Duration;

/// One event; comments (heartbeats) have `comment` set.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
    pub comment: bool,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// Subscribes at `base` with `token`, resuming after `last_event_id`.
    pub async fn connect(base: &str, token: &str, last_event_id: Option<i64>) -> Sse {
        let mut request = reqwest::Client::new().get(format!("{base}/api/v1/changes")).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Sse { response, buffer: String::new() }
    }

    /// The next event or comment; `None` when the server ends the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event that is not a comment, waiting at most 30 s (only so
    /// a broken build fails instead of hanging).
    pub async fn event(&mut self) -> Option<Event> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match self.next().await {
                    Some(e) if e.comment => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("no event within 30 s")
    }

    /// The next `n` events (comments skipped).
    pub async fn events(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.event().await.expect("the stream ended early"));
        }
        out
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event { id: None, event: "message".into(), data: String::new(), comment: false };
    for line in block.lines() {
        if line.starts_with(':') {
            event.comment = true;
        } else if let Some(id) = line.strip_prefix("id: ") {
            event.id = id.parse().ok();
        } else if let Some(name) = line.strip_prefix("event: ") {
            event.event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            event.data.push_str(data);
        }
    }
    event
}
