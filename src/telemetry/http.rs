//! The HTTP endpoint of `[metrics] listen`: `/metrics` in the Prometheus
//! text format, `/healthz` while the process runs and `/readyz` when every
//! watched mailbox is connected, with a JSON body that says why not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;

/// State of one component that readiness depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentState {
    /// Whether the component works.
    pub ready: bool,
    /// Reason it does not work, in the words of its last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Readiness of the process: one entry per component, such as
/// `inbound/tickets/INBOX`. Clones share the entries.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, ComponentState>>>,
    /// `mailbridge_ready{component}`, when registered.
    gauge: Option<IntGaugeVec>,
}

impl Readiness {
    /// Creates the readiness state and registers its gauge on `registry`.
    ///
    /// # Errors
    ///
    /// [`prometheus::Error::AlreadyReg`] when `registry` already has it.
    pub fn registered(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "mailbridge_ready",
                "1 while the component is ready, else 0, as /readyz reports it; a \
                 boolean without unit.",
            ),
            &["component"],
        )?;
        registry.register(Box::new(gauge.clone()))?;

        Ok(Self {
            components: Arc::default(),
            gauge: Some(gauge),
        })
    }

    /// Marks `component` ready.
    pub fn ready(&self, component: &str) {
        self.set(
            component,
            ComponentState {
                ready: true,
                reason: None,
            },
        );
    }

    /// Marks `component` not ready because of `reason`.
    pub fn not_ready(&self, component: &str, reason: impl Into<String>) {
        self.set(
            component,
            ComponentState {
                ready: false,
                reason: Some(reason.into()),
            },
        );
    }

    /// Forgets `component`, such as a mailbox another replica now watches.
    pub fn remove(&self, component: &str) {
        let mut components = self.components.lock().expect("readiness lock");
        if let Some(gauge) = &self.gauge {
            let _ = gauge.remove_label_values(&[component]);
        }
        components.remove(component);
    }

    fn set(&self, component: &str, state: ComponentState) {
        let mut components = self.components.lock().expect("readiness lock");
        if let Some(gauge) = &self.gauge {
            gauge
                .with_label_values(&[component])
                .set(i64::from(state.ready));
        }
        components.insert(component.to_owned(), state);
    }

    /// Returns whether every component is ready, and a copy of the states.
    pub fn snapshot(&self) -> (bool, BTreeMap<String, ComponentState>) {
        let components = self.components.lock().expect("readiness lock").clone();
        (components.values().all(|state| state.ready), components)
    }
}

#[derive(Clone)]
struct Shared {
    registry: Registry,
    readiness: Readiness,
}

/// Encodes every metric of `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding of gathered metrics");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// Binds `listen`; the returned server runs when awaited.
///
/// # Errors
///
/// The bind error, for example when the address is in use.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared {
            registry,
            readiness,
        });

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let text = encode(&shared.registry);
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn ready(State(shared): State<Shared>) -> Response {
    let (ready, components) = shared.readiness.snapshot();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = serde_json::json!({ "ready": ready, "components": components });
    let content_type = [(header::CONTENT_TYPE, "application/json")];

    (status, content_type, body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_component() {
        let readiness = Readiness::default();
        readiness.ready("inbound/tickets/INBOX");
        assert!(readiness.snapshot().0);

        readiness.not_ready("account/support", "refresh token rejected");

        let (ready, components) = readiness.snapshot();
        assert!(!ready);
        assert_eq!(
            components["account/support"].reason.as_deref(),
            Some("refresh token rejected")
        );
    }

    #[test]
    fn readiness_gauge_follows_state() {
        let registry = Registry::new();
        let readiness = Readiness::registered(&registry).unwrap();

        readiness.not_ready("outbound/replies", "connecting to the broker");
        let before = encode(&registry);
        readiness.ready("outbound/replies");
        let after = encode(&registry);

        assert!(before.contains(r#"mailbridge_ready{component="outbound/replies"} 0"#));
        assert!(after.contains(r#"mailbridge_ready{component="outbound/replies"} 1"#));
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let registry = Registry::new();
        let inbound = crate::telemetry::InboundMetrics::new(&registry).unwrap();
        inbound.record_cycle("support", "INBOX", std::time::Duration::from_millis(3));
        let readiness = Readiness::default();
        readiness.not_ready("inbound/tickets/INBOX", "connecting");
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, readiness.clone(), async {
            stopped.await.ok();
        }));

        let get = |path: &str| reqwest::get(format!("http://{address}{path}"));
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(metrics.contains("# TYPE mailbridge_imap_poll_duration_seconds histogram"));
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        let not_ready = get("/readyz").await.unwrap();
        assert_eq!(not_ready.status(), 503);
        assert!(not_ready.text().await.unwrap().contains("connecting"));
        readiness.ready("inbound/tickets/INBOX");
        assert_eq!(get("/readyz").await.unwrap().status(), 200);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
