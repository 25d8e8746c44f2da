//! apiguard-limiter: the companion service the apiguard filter calls for rate-limit decisions.
//!
//! The router is built by [`app`] so tests drive it without a socket; `main.rs` only parses
//! flags, binds and serves with graceful shutdown.
#![forbid(unsafe_code)]

use axum::routing::get;
use axum::Router;

/// The service's routes.
pub fn app() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// Liveness: the process serves HTTP. Says nothing about the store.
async fn healthz() -> &'static str {
    "ok\n"
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_answers_ok() {
        let res = super::app()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok\n");
    }
}
