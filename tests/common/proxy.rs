//! A TCP proxy to PostgreSQL that a test can cut: it drops every open
//! connection and refuses new ones until restored, so one client loses its
//! database while the other tests keep theirs. It can also hold the
//! server's replies (requests still reach the server), to stop a client
//! between sending a statement and reading its answer.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    held: watch::Sender<bool>,
    /// When set, the next connection that sends these bytes has them
    /// delivered, its replies held, and is then cut.
    cut_after: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (held, _) = watch::channel(false);
        let cut_after: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let (up2, cut2, held2, cut_after2) = (up.clone(), cut.clone(), held.clone(), cut_after.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = cut2.subscribe();
                let held_rx = held2.subscribe();
                let cut_after = cut_after2.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = inbound.into_split();
                    let (server_read, server_write) = outbound.into_split();
                    // This connection's own hold, set when it sends the armed bytes.
                    let (hold_this, hold_this_rx) = watch::channel(false);
                    tokio::select! {
                        _ = pump_watching(client_read, server_write, cut_after, hold_this) => {}
                        _ = pump(server_read, client_write, [held_rx, hold_this_rx]) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut, held, cut_after }
    }

    /// The next connection to send `bytes` (say, a COMMIT) has them
    /// delivered, gets no reply, and is cut 300 ms later: the client cannot
    /// know what became of them.
    pub fn cut_after(&self, bytes: &[u8]) {
        *self.cut_after.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops passing the server's replies on (they wait, nothing is lost).
    pub fn hold_replies(&self) {
        self.held.send_replace(true);
    }

    pub fn release_replies(&self) {
        self.held.send_replace(false);
    }
}

/// Copies `from` to `to`, waiting while either hold says so. Both are read
/// here, at the moment a reply is to be passed on: a hold set before the
/// request went out is always seen by the reply it is meant to stop.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    [mut all, mut this]: [watch::Receiver<bool>; 2],
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *all.borrow_and_update() || *this.borrow_and_update() {
            let changed = tokio::select! {
                r = all.changed() => r,
                r = this.changed() => r,
            };
            if changed.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies client bytes to the server; when they contain the armed bytes,
/// holds this connection's replies and ends it 300 ms later.
async fn pump_watching(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    armed: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    hold_this: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let hit = {
            let mut armed = armed.lock().unwrap();
            let hit = armed.as_ref().is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice()));
            if hit {
                *armed = None;
            }
            hit
        };
        if hit {
            hold_this.send_replace(true);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if hit {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            return;
        }
    }
}
