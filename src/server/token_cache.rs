//! Authenticated tokens cached in memory, so a request costs no database
//! round trip. Every change to `api_tokens` is announced (`pg_notify`), and a
//! listener drops the whole cache when one arrives; while that listener is
//! not connected nothing is cached and every request asks the database. A
//! generation counter keeps a lookup that raced a revocation from caching
//! the stale answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::store::tokens::{self, Principal};
use crate::store::StoreError;

#[derive(Default)]
pub struct TokenCache {
    entries: DashMap<Vec<u8>, Principal>,
    generation: AtomicU64,
    listening: AtomicBool,
}

impl TokenCache {
    /// The principal behind `token`, from the cache when it can be trusted.
    pub async fn authenticate(&self, pool: &PgPool, token: &str) -> Result<Option<Principal>, StoreError> {
        let hash = tokens::hash_token(token);
        if let Some(principal) = self.cached(&hash) {
            return Ok(Some(principal));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let found = tokens::authenticate(pool, token).await?;
        if let Some(principal) = &found {
            if self.listening.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation {
                self.entries.insert(hash, principal.clone());
            }
        }
        Ok(found)
    }

    fn cached(&self, hash: &[u8]) -> Option<Principal> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        let principal = self.entries.get(hash)?.clone();
        match principal.expires_at {
            Some(at) if at <= OffsetDateTime::now_utc() => {
                self.entries.remove(hash);
                None
            }
            _ => Some(principal),
        }
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Follows token changes for as long as the cache lives; reconnects
    /// with backoff, caching nothing while disconnected.
    pub fn spawn_listener(self: &Arc<Self>, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(strong) = cache.upgrade() else { return };
                let error = strong.listen(&pool).await;
                strong.listening.store(false, Ordering::SeqCst);
                strong.invalidate();
                drop(strong);
                tracing::warn!(error = %error, "token cache listener lost; authenticating against the database");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        })
    }

    /// Listens until the connection fails; says why.
    async fn listen(&self, pool: &PgPool) -> String {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(e) => return e.to_string(),
        };
        if let Err(e) = listener.listen("api_tokens").await {
            return e.to_string();
        }
        self.invalidate();
        self.listening.store(true, Ordering::SeqCst);
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => self.invalidate(),
                Ok(None) => return "the connection was lost".into(),
                Err(e) => return e.to_string(),
            }
        }
    }
}
