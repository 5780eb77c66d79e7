//! Basic auth for the main listener (`basic_auth_users` of `--web.config.file`): it guards
//! `/metrics`, `/-/reload` and the landing page; the probes ([`OPEN_ROUTES`]) stay open, and
//! callbacks keep their own signature check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};

use super::OPEN_ROUTES;
use crate::instruments::HttpInstruments;
use crate::webconfig::{BasicAuthUsers, LiveWebConfig};

/// Puts `router` behind basic auth for the `basic_auth_users` of `web` in force at each request
/// (none listed: open); refusals for lack of a bcrypt slot are counted on `refused`.
pub fn guard(router: Router, web: Arc<LiveWebConfig>, refused: HttpInstruments) -> Router {
    let state = AuthState {
        auth: Arc::new(LiveAuth {
            web,
            built: Mutex::new(None),
        }),
        refused,
    };
    router.layer(axum::middleware::from_fn_with_state(state, require_auth))
}

/// The users of the web config in force, with their cache of verified credentials; rebuilt (and
/// the cache emptied) when the web config changes, so a removed user or a changed password stops
/// working at once.
struct LiveAuth {
    web: Arc<LiveWebConfig>,
    /// (generation of the web config, its users; `None`: no basic auth).
    built: Mutex<Option<(u64, Option<Arc<BasicAuth>>)>>,
}

impl LiveAuth {
    fn current(&self) -> Option<Arc<BasicAuth>> {
        let generation = self.web.generation();
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        match &*built {
            Some((g, auth)) if *g == generation => auth.clone(),
            _ => {
                let auth = self
                    .web
                    .current()
                    .basic_auth_users
                    .clone()
                    .map(|u| Arc::new(BasicAuth::new(u)));
                *built = Some((generation, auth.clone()));
                auth
            }
        }
    }
}

/// bcrypt checks at once at most: each costs a core for tens of milliseconds, and
/// `spawn_blocking` would otherwise start a thread per wrong password under a flood.
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Verified credentials remembered (least recently used dropped first).
const VERIFIED_CACHE: usize = 64;

/// bcrypt-checked users. Only credentials that verified are cached, so a flood of wrong passwords
/// can neither evict the real scraper's entry nor make it pay bcrypt again; bcrypt work is
/// bounded by [`MAX_CONCURRENT_BCRYPT`], past which a request is refused at once.
struct BasicAuth {
    users: BasicAuthUsers,
    /// (user, SHA-256 of the password) of verified credentials, most recently used last.
    verified: Mutex<VecDeque<(String, [u8; 32])>>,
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthCheck {
    Allowed,
    Denied,
    /// Every bcrypt slot is busy: refused at once (503), counted as `auth_busy`.
    Busy,
}

/// A real bcrypt hash (of a random password, cost 10), verified for unknown users so that the
/// time taken does not tell which users exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        bcrypt::hash(hex::encode(random), 10).unwrap_or_default()
    })
}

impl BasicAuth {
    fn new(users: BasicAuthUsers) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_CACHE)),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BCRYPT)),
        }
    }

    /// Checks an `Authorization` header value.
    async fn check(self: &Arc<Self>, header_value: Option<&str>) -> AuthCheck {
        use base64::Engine;
        let Some(encoded) = header_value.and_then(|h| h.strip_prefix("Basic ")) else {
            return AuthCheck::Denied;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return AuthCheck::Denied;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return AuthCheck::Denied;
        };
        let Some((user, password)) = text.split_once(':') else {
            return AuthCheck::Denied;
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user.to_string(), digest);
        {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = verified.iter().position(|k| *k == key) {
                if let Some(hit) = verified.remove(i) {
                    verified.push_back(hit);
                }
                return AuthCheck::Allowed;
            }
        }
        let Ok(slot) = self.bcrypt_slots.clone().try_acquire_owned() else {
            return AuthCheck::Busy;
        };
        let hash = self.users.hash(user).map(str::to_string);
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| dummy_hash().to_string());
            bcrypt::verify(&password, &hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false);
        if !ok {
            return AuthCheck::Denied;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.pop_front();
        }
        verified.push_back(key);
        AuthCheck::Allowed
    }
}

/// What [`require_auth`] needs: the users and where refusals are counted.
#[derive(Clone)]
struct AuthState {
    auth: Arc<LiveAuth>,
    refused: HttpInstruments,
}

/// Middleware: [`OPEN_ROUTES`] pass; every other path needs a valid `Authorization: Basic` while
/// the web config lists users.
async fn require_auth(State(state): State<AuthState>, req: Request, next: Next) -> Response {
    if OPEN_ROUTES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(auth) = state.auth.current() else {
        return next.run(req).await;
    };
    let header_value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth.check(header_value).await {
        AuthCheck::Allowed => next.run(req).await,
        AuthCheck::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="tiw-push-exporter""#)],
            "Unauthorized\n",
        )
            .into_response(),
        AuthCheck::Busy => {
            state.refused.refused("auth", "auth_busy");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many password checks at once, retry later\n",
            )
                .into_response()
        }
    }
}
