//! Authenticated tokens cached in memory, so a request costs no database
//! round trip. Every change to `api_tokens` is announced (`pg_notify`, with
//! the token's id), and a listener drops that token's entry when one arrives
//! (a new token evicts nothing; an announcement it cannot read drops all). When that listener is
//! lost (the database is away), tokens already verified stay valid for a
//! bounded grace (`POLICY_VALUES_AUTH_GRACE`, 5 minutes by default), so
//! reads go on; nothing new is cached meanwhile, a token never seen is asked
//! of the database (503 if it does not answer), and the cache is dropped
//! when the listener is back. A generation counter keeps a lookup that raced
//! a revocation from caching the stale answer.
//!
//! Concurrent first verifications of one token make one lookup: the others
//! wait for it and take its answer (a burst of subscriptions with a new
//! token would otherwise open as many database connections). They share it
//! only within one generation, so a request that arrives after a token
//! change never takes an answer read before it.
//!
//! With a file (beside the server's snapshot file), the verified tokens are
//! kept there too, so a server that starts while the database is away can
//! still verify them, for the grace after the file was last written by a
//! server that could hear revocations.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::store::tokens::{self, Principal};
use crate::store::StoreError;

#[derive(Clone)]
struct Entry {
    principal: Principal,
    /// When this entry was last known valid, for entries restored from the
    /// file (ms since the epoch); `None`: until the listener was lost.
    vouched_ms: Option<u64>,
}

/// The answer of one lookup, for every request that waited for it.
type Answer = Result<Option<Principal>, Failure>;

/// A failed lookup, told to each request that waited for it.
#[derive(Clone)]
enum Failure {
    Database(Arc<sqlx::Error>),
    Other(String),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> StoreError {
        match failure {
            Failure::Database(e) => StoreError::Shared(e),
            Failure::Other(message) => StoreError::Corrupt(message),
        }
    }
}

pub struct TokenCache {
    entries: DashMap<Vec<u8>, Entry>,
    /// Lookups in flight, by token hash and the generation they started in.
    inflight: DashMap<(Vec<u8>, u64), Arc<tokio::sync::OnceCell<Answer>>>,
    generation: AtomicU64,
    listening: AtomicBool,
    /// When the listener was lost (ms since the epoch), 0 while listening.
    lost_at_ms: AtomicU64,
    grace: Duration,
    file: Option<PathBuf>,
    /// Entries were added since the file was written.
    dirty: AtomicBool,
}

/// How long a lookup may wait for the database while the listener is lost.
const LOOKUP_WHILE_LOST: Duration = Duration::from_secs(2);
/// The longest wait between attempts to get the listener back.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the file is rewritten while the listener holds, to keep
/// vouching for its tokens.
const REWRITE: Duration = Duration::from_secs(30);

impl TokenCache {
    pub fn new(grace: Duration, file: Option<PathBuf>) -> TokenCache {
        let cache = TokenCache {
            entries: DashMap::new(),
            inflight: DashMap::new(),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            lost_at_ms: AtomicU64::new(0),
            grace,
            file,
            dirty: AtomicBool::new(false),
        };
        cache.restore();
        cache
    }

    /// The principal behind `token`, from the cache when it can be trusted.
    pub async fn authenticate(&self, pool: &PgPool, token: &str) -> Result<Option<Principal>, StoreError> {
        let hash = tokens::hash_token(token);
        if let Some(principal) = self.cached(&hash) {
            return Ok(Some(principal));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let flight = (hash, generation);
        let cell = Arc::clone(&*self.inflight.entry(flight.clone()).or_default());
        // The first request runs the lookup; the others wait for its answer
        // (if it is cancelled, the next one waiting runs it).
        let answer = cell.get_or_init(|| self.lookup(pool, token, &flight.0, generation)).await.clone();
        self.inflight.remove_if(&flight, |_, c| Arc::ptr_eq(c, &cell));
        answer.map_err(StoreError::from)
    }

    /// Asks the database; caches a token found if no change came meanwhile.
    async fn lookup(&self, pool: &PgPool, token: &str, hash: &[u8], generation: u64) -> Answer {
        metrics::counter!("policy_values_token_lookups_total").increment(1);
        let found = if self.listening.load(Ordering::SeqCst) {
            tokens::authenticate(pool, token).await
        } else {
            // Probably no database: do not hold the request for long.
            tokio::time::timeout(LOOKUP_WHILE_LOST, tokens::authenticate(pool, token))
                .await
                .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolTimedOut)))
        };
        let found = found.map_err(|e| match e {
            StoreError::Database(e) => Failure::Database(Arc::new(e)),
            StoreError::Shared(e) => Failure::Database(e),
            other => Failure::Other(other.to_string()),
        })?;
        if let Some(principal) = &found {
            if self.listening.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation {
                self.entries.insert(hash.to_vec(), Entry { principal: principal.clone(), vouched_ms: None });
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
        Ok(found)
    }

    fn cached(&self, hash: &[u8]) -> Option<Principal> {
        let entry = self.entries.get(hash)?.clone();
        if !self.listening.load(Ordering::SeqCst) {
            let vouched = entry.vouched_ms.unwrap_or_else(|| self.lost_at_ms.load(Ordering::SeqCst));
            if vouched == 0 || now_ms().saturating_sub(vouched) >= self.grace.as_millis() as u64 {
                return None;
            }
        }
        match entry.principal.expires_at {
            Some(at) if at <= OffsetDateTime::now_utc() => {
                self.entries.remove(hash);
                None
            }
            _ => Some(entry.principal),
        }
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Drops the entry of the token an announcement names (its id), or
    /// every entry when the payload is not an id.
    fn changed(&self, payload: &str) {
        let Ok(id) = payload.parse::<uuid::Uuid>() else {
            return self.invalidate();
        };
        // A lookup in flight may have read the token before this change.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.retain(|_, entry| entry.principal.token_id != id);
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Follows token changes for as long as the cache lives; reconnects
    /// with backoff. Keeps the file, if any, current meanwhile. Returns once
    /// the first attempt to listen has succeeded or failed, so a server
    /// caches from its first request when the database answers.
    pub async fn spawn_listener(self: &Arc<Self>, pool: PgPool) -> tokio::task::JoinHandle<()> {
        if self.file.is_some() {
            tokio::spawn(keep_file(Arc::downgrade(self)));
        }
        let cache = Arc::downgrade(self);
        let (first, first_done) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut first = Some(first);
            loop {
                let Some(strong) = cache.upgrade() else { return };
                let error = strong.listen(&pool, &mut first).await;
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
                if strong.listening.swap(false, Ordering::SeqCst) {
                    // Verified tokens stay valid for the grace; the cache is
                    // dropped when the listener is back.
                    strong.lost_at_ms.store(now_ms(), Ordering::SeqCst);
                    backoff = Duration::from_millis(100);
                }
                drop(strong);
                tracing::warn!(error = %error, "token cache listener lost; verified tokens stay valid for the grace");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), first_done).await;
        task
    }

    /// Listens until the connection fails; says why. Tells `first` once
    /// listening.
    async fn listen(&self, pool: &PgPool, first: &mut Option<tokio::sync::oneshot::Sender<()>>) -> String {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(e) => return e.to_string(),
        };
        // Told of a lost connection at once (we reconnect ourselves), so the
        // grace starts when the database is lost, not after a retry.
        listener.eager_reconnect(false);
        if let Err(e) = listener.listen("api_tokens").await {
            return e.to_string();
        }
        self.invalidate();
        self.listening.store(true, Ordering::SeqCst);
        self.lost_at_ms.store(0, Ordering::SeqCst);
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => self.changed(notification.payload()),
                Ok(None) => return "the connection was lost".into(),
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Loads the file's tokens, if it was written less than the grace ago.
    fn restore(&self) {
        let Some(path) = &self.file else { return };
        let Ok(bytes) = std::fs::read(path) else { return };
        let Ok(kept) = serde_json::from_slice::<Kept>(&bytes) else {
            tracing::warn!(path = %path.display(), "ignoring an unreadable token file");
            return;
        };
        if now_ms().saturating_sub(kept.written_ms) >= self.grace.as_millis() as u64 {
            return;
        }
        for token in kept.tokens {
            let Ok(hash) = hex::decode(&token.hash) else { continue };
            let principal = token.principal.into_principal();
            self.entries.insert(hash, Entry { principal, vouched_ms: Some(kept.written_ms) });
        }
        tracing::info!(path = %path.display(), tokens = self.entries.len(), "verified tokens restored for the grace");
    }

    /// Writes the tokens the listener vouches for (only while it holds).
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let tokens = self
            .entries
            .iter()
            .filter(|e| e.vouched_ms.is_none())
            .map(|e| KeptToken { hash: hex::encode(e.key()), principal: KeptPrincipal::of(&e.principal) })
            .collect();
        let body = serde_json::to_vec(&Kept { written_ms: now_ms(), tokens }).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&tmp)?, &body)?;
        std::fs::rename(&tmp, path)
    }
}

/// Rewrites the file when tokens were added, and every `REWRITE` while the
/// listener holds; stops when the cache is gone.
async fn keep_file(cache: std::sync::Weak<TokenCache>) {
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(cache) = cache.upgrade() else { return };
        let Some(path) = cache.file.clone() else { return };
        let due = cache.dirty.load(Ordering::SeqCst) || last.elapsed() >= REWRITE;
        if !cache.listening.load(Ordering::SeqCst) || !due {
            continue;
        }
        cache.dirty.store(false, Ordering::SeqCst);
        last = tokio::time::Instant::now();
        if let Err(e) =
            tokio::task::spawn_blocking(move || cache.write(&path)).await.map_err(std::io::Error::other).and_then(|r| r)
        {
            tracing::warn!(error = %e, "could not write the token file");
        }
    }
}

/// The token file: SHA-256 hashes of tokens (never tokens) and who they are.
#[derive(Serialize, Deserialize)]
struct Kept {
    written_ms: u64,
    tokens: Vec<KeptToken>,
}

#[derive(Serialize, Deserialize)]
struct KeptToken {
    hash: String,
    principal: KeptPrincipal,
}

#[derive(Serialize, Deserialize)]
struct KeptPrincipal {
    #[serde(flatten)]
    principal: Principal,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

impl KeptPrincipal {
    fn of(principal: &Principal) -> KeptPrincipal {
        KeptPrincipal { principal: principal.clone(), expires_at: principal.expires_at }
    }

    fn into_principal(self) -> Principal {
        Principal { expires_at: self.expires_at, ..self.principal }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
