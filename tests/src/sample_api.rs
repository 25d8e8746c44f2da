//! The demo's sample API: tenant-scoped documents, admin routes, an auth route, search and
//! export. It trusts the identity headers apiguard sets (`x-user-id`, `x-tenant-id`,
//! `x-user-roles`) and shows them back as `caller`, so the demo can show what reached it.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::serve::Server;
use crate::Result;

fn caller(h: &HeaderMap) -> Value {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    json!({"user": get("x-user-id"), "tenant": get("x-tenant-id"), "roles": get("x-user-roles")})
}

pub fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/api/v1/tenants/{tenant}/documents/{id}",
            any(|m: Method, Path((tenant, id)): Path<(String, String)>, h: HeaderMap| async move {
                let doc = json!({"tenant": tenant, "id": id, "title": format!("Document {id} of {tenant}")});
                let body = match m.as_str() {
                    "DELETE" => json!({"deleted": doc, "caller": caller(&h)}),
                    "PUT" | "PATCH" => json!({"updated": doc, "caller": caller(&h)}),
                    _ => json!({"document": doc, "caller": caller(&h)}),
                };
                Json(body)
            }),
        )
        .route(
            "/api/v1/tenants/{tenant}/documents",
            post(|Path(tenant): Path<String>, h: HeaderMap| async move {
                (StatusCode::CREATED, Json(json!({"created": {"tenant": tenant, "id": "new"}, "caller": caller(&h)})))
            }),
        )
        .route(
            "/api/v1/admin/{*rest}",
            any(|Path(rest): Path<String>, h: HeaderMap| async move {
                Json(json!({"admin": rest, "settings": {"maintenance": false}, "caller": caller(&h)}))
            }),
        )
        .route(
            "/api/v1/auth/token",
            post(|h: HeaderMap| async move {
                Json(json!({"note": "tokens come from the demo issuer (apiguard token mint)", "caller": caller(&h)}))
            }),
        )
        .route(
            "/api/v1/search",
            get(|Query(q): Query<std::collections::BTreeMap<String, String>>, h: HeaderMap| async move {
                let query = q.get("q").cloned().unwrap_or_default();
                Json(json!({"query": query, "results": [{"id": "7", "title": "Document 7"}], "caller": caller(&h)}))
            }),
        )
        .route(
            "/api/v1/export",
            get(|h: HeaderMap| async move { Json(json!({"export": "started", "caller": caller(&h)})) }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "no such route"}))).into_response() })
}

/// The sample API on an address (`127.0.0.1:0` for a free port).
pub async fn start(addr: &str) -> Result<Server> {
    Server::start("sample API", addr, app()).await
}
