//! The hub's registration endpoint (ADR 0031): axum over TLS (tokio-rustls), served by the leader
//! when `--registration-listen` is set. `POST /v1/join` takes a signed join request, runs the
//! [`checks`] in order (rate limit, shape, expiry, pool, signature, replay, name, bond read from
//! the chain), creates the MemberCluster and answers with a TokenRequest token of the member's
//! ServiceAccount. `POST /v1/renew` takes the member's current token as a bearer and answers with
//! a new one. `POST /v1/leave` takes a leave request signed by an openly joined member's wallet:
//! the member is cordoned and annotated, and the member controller deletes it once its attempts
//! have ended and settled. Nothing is created or changed for a refused request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::B256;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use gpufed_crds::join::{
    ADMISSION_OPEN, ANNOTATION_LEAVE_REQUEST, ANNOTATION_LEAVING, JOIN_PATH, JoinErrorBody,
    JoinRequestBody, JoinResponse, LABEL_ADMISSION, LEAVE_PATH, LeaveRequestBody, LeaveResponse,
    POOLS_PATH, PoolInfo, RENEW_PATH, RenewResponse,
};
use gpufed_crds::naming::{MEMBER_NAMESPACE_PREFIX, member_namespace, member_service_account};
use gpufed_crds::{EvmAddress, GpuPool, MemberCluster};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, SemaphorePermit, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::checks::{self, Existing, Refusal, ReplayGuard};
use super::limit::RateLimiter;
use crate::error::{Error, Result};
use crate::hub::context::Context;
use crate::hub::registration;

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024;
/// Requests handled at once; more are answered `Unavailable`.
const MAX_IN_FLIGHT: usize = 64;
/// TLS handshakes at once; more connections are closed at once.
const MAX_HANDSHAKES: usize = 256;
/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sources the rate limiter tracks.
const MAX_SOURCES: usize = 10_000;
/// How long the hub waits for the member controller to make the new member's ServiceAccount.
const SERVICE_ACCOUNT_WITHIN: Duration = Duration::from_secs(20);

/// Settings of the registration endpoint (`gpufed-operator hub --registration-*`).
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain of the endpoint.
    pub tls_cert: PathBuf,
    /// PEM private key of the endpoint.
    pub tls_key: PathBuf,
    /// Lifetime asked for each member token (the apiserver may shorten it; at least 10 min).
    pub token_ttl: Duration,
    /// Requests a source may send back to back.
    pub burst: u32,
    /// Time for one more request of a source.
    pub refill: Duration,
}

/// What the handlers share.
struct Registration {
    ctx: Arc<Context>,
    /// The hub's own connection settings; a renewal's bearer token replaces its credentials.
    base: kube::Config,
    ttl: Duration,
    limiter: std::sync::Mutex<RateLimiter>,
    replay: std::sync::Mutex<ReplayGuard>,
    in_flight: Semaphore,
    /// One join at a time: the name, the wallet's member count and the creation are decided
    /// together.
    joining: Mutex<()>,
}

/// The address of the connection's peer.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

/// Connections whose TLS handshake has finished, fed by [`accept_loop`].
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Accepts TCP connections and hands each to its own task for the TLS handshake, so a slow
/// client holds up nobody else.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "registration endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            continue;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

fn tls_config(config: &RegistrationConfig) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&config.tls_cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "reading --registration-tls-cert {}: {e}",
                config.tls_cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(&config.tls_key).map_err(|e| {
        Error::Config(format!(
            "reading --registration-tls-key {}: {e}",
            config.tls_key.display()
        ))
    })?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("the registration TLS certificate and key: {e}")))
}

/// Serves the endpoint until the task is dropped.
pub async fn run(ctx: Arc<Context>, base: kube::Config, config: RegistrationConfig) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let tcp = TcpListener::bind(config.listen).await.map_err(|e| {
        Error::Config(format!(
            "binding --registration-listen {}: {e}",
            config.listen
        ))
    })?;
    let local = tcp
        .local_addr()
        .map_err(|e| Error::Config(format!("registration endpoint address: {e}")))?;
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    let state = Arc::new(Registration {
        ctx,
        base,
        ttl: config.token_ttl,
        limiter: std::sync::Mutex::new(RateLimiter::new(config.burst, config.refill, MAX_SOURCES)),
        replay: std::sync::Mutex::new(ReplayGuard::default()),
        in_flight: Semaphore::new(MAX_IN_FLIGHT),
        joining: Mutex::new(()),
    });
    let app = Router::new()
        .route(JOIN_PATH, post(join))
        .route(RENEW_PATH, post(renew))
        .route(LEAVE_PATH, post(leave))
        .route(&format!("{POOLS_PATH}{{pool}}"), get(pool_info))
        .with_state(state);
    tracing::info!(%local, "registration endpoint listening (TLS)");
    let accept = tokio::spawn(accept_loop(tcp, acceptor, tx));
    let served = axum::serve(
        TlsListener { rx, local },
        app.into_make_service_with_connect_info::<Peer>(),
    )
    .await;
    accept.abort();
    served.map_err(|e| Error::Config(format!("registration endpoint stopped: {e}")))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn refusal_response(r: &Refusal) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = JoinErrorBody {
        reason: r.reason().to_string(),
        message: r.to_string(),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if let Refusal::RateLimited {
        retry_after_secs, ..
    } = r
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

impl Registration {
    fn rate_limit(&self, peer: SocketAddr) -> std::result::Result<(), Refusal> {
        let mut limiter = self
            .limiter
            .lock()
            .map_err(|_| Refusal::Unavailable("the rate limiter failed: retry".into()))?;
        limiter
            .check(peer.ip(), Instant::now())
            .map_err(|wait| Refusal::RateLimited {
                source_ip: peer.ip().to_string(),
                retry_after_secs: wait.as_secs().max(1),
            })
    }

    /// A signed request's way in: the rate limit, then a slot among those in flight.
    fn admit(&self, peer: SocketAddr) -> std::result::Result<SemaphorePermit<'_>, Refusal> {
        self.rate_limit(peer)?;
        self.in_flight
            .try_acquire()
            .map_err(|_| Refusal::Unavailable("the hub is busy with other requests: retry".into()))
    }

    /// The GpuPool `name` from the cache.
    fn pool(&self, name: &str) -> Option<Arc<GpuPool>> {
        self.ctx
            .stores
            .pools
            .state()
            .into_iter()
            .find(|p| p.name_any() == name)
    }

    /// [`Refusal::Replayed`] if the request `id` was accepted before and has not expired.
    fn not_replayed(
        &self,
        id: &B256,
        now: u64,
        nonce: u64,
        wallet: &EvmAddress,
    ) -> std::result::Result<(), Refusal> {
        let seen = self
            .replay
            .lock()
            .map_err(|_| Refusal::Unavailable("the replay guard failed: retry".into()))?
            .seen(id, now);
        if seen {
            return Err(Refusal::Replayed {
                nonce,
                wallet: wallet.to_string(),
            });
        }
        Ok(())
    }

    /// Records the accepted request `id` until it expires.
    fn remember(&self, id: B256, expires: u64) -> std::result::Result<(), Refusal> {
        self.replay
            .lock()
            .map_err(|_| Refusal::Unavailable("the replay guard failed: retry".into()))?
            .record(id, expires);
        Ok(())
    }

    /// A token of the member's ServiceAccount, once the member controller has registered the
    /// member (its ServiceAccount and RBAC, ADR 0017); the TokenRequest is also retried while it
    /// answers 404 or 403. The hub needs no `get` on ServiceAccounts for this.
    async fn token_for(&self, cluster: &str) -> std::result::Result<(String, u64), Refusal> {
        let ns = member_namespace(cluster);
        let sa = member_service_account(cluster);
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &ns);
        let deadline = Instant::now() + SERVICE_ACCOUNT_WITHIN;
        let unavailable = |what: String| {
            Refusal::Unavailable(format!(
                "member {cluster:?} exists but {what}: send a new signed request (new nonce) to get its credential"
            ))
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(i64::try_from(self.ttl.as_secs()).unwrap_or(3600)),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        // The member controller writes status.credentialsSecret once every object of the member
        // is applied (ServiceAccount, Roles and bindings): a token issued before that would be
        // refused its own member's status for a moment.
        let members: Api<MemberCluster> = Api::all(self.ctx.client.clone());
        loop {
            let registered = members
                .get_opt(cluster)
                .await
                .map_err(|e| unavailable(format!("reading it back: {e}")))?
                .and_then(|m| m.status)
                .is_some_and(|s| s.credentials_secret.is_some());
            if registered {
                break;
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "the hub did not finish registering it within {SERVICE_ACCOUNT_WITHIN:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer = loop {
            match api
                .create_token_request(&sa, &PostParams::default(), &request)
                .await
            {
                Ok(a) => break a,
                Err(kube::Error::Api(s))
                    if (s.code == 404 || s.code == 403) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(unavailable(format!(
                        "no token for its ServiceAccount within {SERVICE_ACCOUNT_WITHIN:?}: {e}"
                    )));
                }
            }
        };
        let status = answer
            .status
            .ok_or_else(|| unavailable("the apiserver returned no token".into()))?;
        let expires = u64::try_from(status.expiration_timestamp.0.as_second()).unwrap_or(0);
        Ok((status.token, expires))
    }

    async fn join(
        &self,
        peer: SocketAddr,
        req: Request<Body>,
    ) -> std::result::Result<JoinResponse, Refusal> {
        let _permit = self.admit(peer)?;
        let body: JoinRequestBody = read_body(req, "a join request").await?;
        checks::check_shape(&body)?;
        let now = now_secs();
        checks::check_expiry(body.expires, now)?;
        let pool_obj = self.pool(&body.pool);
        let pool = checks::check_pool(&body.pool, pool_obj.as_deref())?;
        let id = checks::check_signature(&body, &pool)?;
        self.not_replayed(&id, now, body.nonce, &body.wallet)?;
        let _one_at_a_time = self.joining.lock().await;
        let members: Api<MemberCluster> = Api::all(self.ctx.client.clone());
        let existing = members
            .get_opt(&body.cluster)
            .await
            .map_err(|e| Refusal::Unavailable(format!("reading member clusters: {e}")))?;
        let found = checks::check_name(&body, &id, existing.as_ref())?;
        let others = self.members_of(&body.wallet, &body.pool, &body.cluster);
        let pool_obj = pool_obj.ok_or_else(|| Refusal::UnknownPool(body.pool.clone()))?;
        let chain = self
            .ctx
            .chain(&pool_obj)
            .await
            .map_err(|e| Refusal::Unavailable(format!("the pool's chain: {e}")))?;
        let bonded = chain
            .bond_of(&body.wallet)
            .await
            .map_err(|e| Refusal::Unavailable(format!("reading the bond on chain: {e}")))?
            .map(|b| b.bonded)
            .unwrap_or_default();
        checks::check_bond(&body.wallet, bonded, &body.pool, &pool, others)?;
        self.remember(id, body.expires)?;
        if found == Existing::None {
            match members
                .create(&PostParams::default(), &checks::member(&body, &id))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(Refusal::NameTaken(format!(
                        "member cluster {:?} was just created by someone else: choose another name",
                        body.cluster
                    )));
                }
                Err(e) => {
                    return Err(Refusal::Unavailable(format!(
                        "creating member cluster {:?}: {e}",
                        body.cluster
                    )));
                }
            }
            tracing::info!(member = %body.cluster, pool = %body.pool, wallet = %body.wallet, "member joined by stake");
        } else {
            tracing::info!(member = %body.cluster, wallet = %body.wallet, "credential re-issued to an openly joined member");
        }
        drop(_one_at_a_time);
        let (token, expires) = self.token_for(&body.cluster).await?;
        let kubeconfig = registration::kubeconfig_yaml(
            &body.cluster,
            &self.ctx.config.member_api_server,
            &self.ctx.config.member_api_ca,
            &token,
        )
        .map_err(|e| Refusal::Unavailable(format!("writing the kubeconfig: {e}")))?;
        Ok(JoinResponse {
            cluster: body.cluster.clone(),
            namespace: member_namespace(&body.cluster),
            kubeconfig,
            token,
            expires,
        })
    }

    /// Checks a signed leave request (rate limit, shape, expiry, pool, signature, replay, the
    /// member's wallet) and marks the member leaving: cordoned, annotated with when and by which
    /// request. The member controller deletes it once [`attempts_on`] it is 0.
    ///
    /// [`attempts_on`]: crate::hub::member_controller::attempts_on
    async fn leave(
        &self,
        peer: SocketAddr,
        req: Request<Body>,
    ) -> std::result::Result<LeaveResponse, Refusal> {
        let _permit = self.admit(peer)?;
        let body: LeaveRequestBody = read_body(req, "a leave request").await?;
        checks::check_leave_shape(&body)?;
        let now = now_secs();
        checks::check_expiry(body.expires, now)?;
        let pool = checks::check_pool(&body.pool, self.pool(&body.pool).as_deref())?;
        let id = checks::check_leave_signature(&body, &pool)?;
        self.not_replayed(&id, now, body.nonce, &body.wallet)?;
        let members: Api<MemberCluster> = Api::all(self.ctx.client.clone());
        let existing = members
            .get_opt(&body.cluster)
            .await
            .map_err(|e| Refusal::Unavailable(format!("reading member clusters: {e}")))?;
        checks::check_leaver(&body, &id, existing.as_ref())?;
        self.remember(id, body.expires)?;
        let since = existing
            .as_ref()
            .and_then(|m| m.annotations().get(ANNOTATION_LEAVING).cloned())
            .unwrap_or_else(|| crate::hub::context::now().0.to_string());
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                ANNOTATION_LEAVING: since,
                ANNOTATION_LEAVE_REQUEST: id.to_string(),
            }},
            "spec": {"cordoned": true},
        });
        members
            .patch(
                &body.cluster,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| {
                Refusal::Unavailable(format!("marking member {:?} leaving: {e}", body.cluster))
            })?;
        let running = crate::hub::member_controller::attempts_on(
            &self.ctx.stores.jobs.state(),
            &body.cluster,
        );
        tracing::info!(member = %body.cluster, wallet = %body.wallet, running, "member leaving at its provider's request");
        Ok(LeaveResponse {
            cluster: body.cluster,
            running_attempts: running,
        })
    }

    fn pool_info(&self, peer: SocketAddr, name: &str) -> std::result::Result<PoolInfo, Refusal> {
        self.rate_limit(peer)?;
        let open = checks::check_pool(name, self.pool(name).as_deref())?;
        Ok(PoolInfo {
            pool: name.to_string(),
            chain_id: open.chain_id,
            bond: open
                .bond
                .to_string()
                .parse()
                .map_err(|e| Refusal::Unavailable(format!("the pool's bond address: {e}")))?,
            min_bond: open.min_bond,
        })
    }

    /// Members of `pool` held by `wallet`, other than `except`.
    fn members_of(&self, wallet: &EvmAddress, pool: &str, except: &str) -> u32 {
        let n = self
            .ctx
            .stores
            .members
            .state()
            .iter()
            .filter(|m| {
                m.spec.pool == pool
                    && m.name_any() != except
                    && m.spec
                        .wallet
                        .as_ref()
                        .is_some_and(|w| w.to_bytes() == wallet.to_bytes())
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    async fn renew(
        &self,
        peer: SocketAddr,
        req: Request<Body>,
    ) -> std::result::Result<RenewResponse, Refusal> {
        self.rate_limit(peer)?;
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::Unauthorized(
                    "send the member's current token as `Authorization: Bearer`".into(),
                )
            })?
            .trim()
            .to_string();
        let cluster = self.member_of_token(&bearer).await?;
        let (token, expires) = self.token_for(&cluster).await?;
        tracing::info!(member = %cluster, "member token renewed");
        Ok(RenewResponse { token, expires })
    }

    /// The openly joined member whose agent token `bearer` is, as the apiserver authenticates it
    /// (a SelfSubjectReview made with that token: the hub needs no TokenReview right).
    async fn member_of_token(&self, bearer: &str) -> std::result::Result<String, Refusal> {
        let unauthorized = |why: String| Refusal::Unauthorized(why);
        let mut config = self.base.clone();
        config.auth_info = serde_json::from_value(serde_json::json!({ "token": bearer }))
            .map_err(|e| unauthorized(format!("unusable token: {e}")))?;
        let client = kube::Client::try_from(config)
            .map_err(|e| Refusal::Unavailable(format!("building a client: {e}")))?;
        let review = Api::<SelfSubjectReview>::all(client)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| unauthorized(format!(
                "the apiserver did not accept the token ({e}): it expired or was revoked; send a new signed join request"
            )))?;
        let username = review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_default();
        let cluster = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(ns, sa)| {
                let cluster = ns.strip_prefix(MEMBER_NAMESPACE_PREFIX)?;
                (sa == member_service_account(cluster)).then(|| cluster.to_string())
            })
            .ok_or_else(|| unauthorized(format!("{username:?} is not a member's agent")))?;
        let open = self.ctx.stores.members.state().iter().any(|m| {
            m.name_any() == cluster
                && m.labels().get(LABEL_ADMISSION).map(String::as_str) == Some(ADMISSION_OPEN)
        });
        if !open {
            return Err(unauthorized(format!(
                "member {cluster:?} did not join by stake: its credential comes from the pool admin"
            )));
        }
        Ok(cluster)
    }
}

/// The request body as `T` (`what` names it in the refusal).
async fn read_body<T: serde::de::DeserializeOwned>(
    req: Request<Body>,
    what: &str,
) -> std::result::Result<T, Refusal> {
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            Refusal::Malformed(format!("body unreadable or over {MAX_BODY} bytes: {e}"))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| Refusal::Malformed(format!("not {what}: {e}")))
}

fn answer<T: serde::Serialize>(
    state: &Registration,
    ok: StatusCode,
    route: &'static str,
    peer: SocketAddr,
    result: std::result::Result<T, Refusal>,
) -> Response {
    let outcome = result.as_ref().map_or_else(Refusal::reason, |_| "Accepted");
    state
        .ctx
        .metrics
        .registration_requests
        .with_label_values(&[route, outcome])
        .inc();
    match result {
        Ok(body) => (ok, axum::Json(body)).into_response(),
        Err(r) => {
            tracing::info!(%route, peer = %peer.ip(), reason = r.reason(), message = %r, "registration request refused");
            refusal_response(&r)
        }
    }
}

async fn join(
    State(state): State<Arc<Registration>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request<Body>,
) -> Response {
    let result = state.join(peer, req).await;
    answer(&state, StatusCode::CREATED, "join", peer, result)
}

async fn renew(
    State(state): State<Arc<Registration>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request<Body>,
) -> Response {
    let result = state.renew(peer, req).await;
    answer(&state, StatusCode::OK, "renew", peer, result)
}

async fn leave(
    State(state): State<Arc<Registration>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request<Body>,
) -> Response {
    let result = state.leave(peer, req).await;
    answer(&state, StatusCode::ACCEPTED, "leave", peer, result)
}

async fn pool_info(
    State(state): State<Arc<Registration>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Path(pool): Path<String>,
) -> Response {
    let result = state.pool_info(peer, &pool);
    answer(&state, StatusCode::OK, "pool", peer, result)
}
