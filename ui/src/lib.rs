//! The embedded web UI: plain HTML, CSS and JavaScript modules (no CDN, no
//! external fonts), bundled at compile time by `build.rs` (in Rust: no Node)
//! into one module named by its content hash, compiled into the binary with
//! `include_bytes!`, and served by one axum [`Router`] at `/` and `/ui/…`.
//!
//! The pages talk only to the appliance's own REST API and WebSocket, from
//! the same origin. Every response of this crate carries [`PAGE_CSP`]: script
//! and style only from our own files (no inline script, no `eval`), nothing
//! fetched from another host, and the UI never framed by another page.
//!
//! Architecture invariant: the UI has no server-side state and no routes of
//! its own beyond static files; everything it shows comes through the
//! public API, so it can do nothing a `curl` user cannot.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The Content-Security-Policy of every UI response. `frame-src 'self'` is
/// for the sandboxed HTML view of a message, which the API serves with its
/// own, stricter policy; `connect-src 'self'` covers the same-origin
/// WebSocket.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

mod fingerprint;
use fingerprint::fingerprint_hex;

// The served names of the hashed assets (`APP_JS_NAME`, …), from build.rs.
include!(concat!(env!("OUT_DIR"), "/bundle.rs"));

/// One embedded file.
struct Asset {
    /// Name under `/ui/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Strong validator, computed at compile time from the bytes.
    etag: &'static str,
    /// Named by its content hash, so a cached copy never goes stale.
    immutable: bool,
}

/// `"` + 16 hex digits + `"`, built in a const context.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    let hex = fingerprint_hex(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = hex[i];
        i += 1;
    }
    out
}

/// An asset as build.rs wrote it to `OUT_DIR`, served as `$served`.
macro_rules! asset {
    ($file:literal, $served:expr, $content_type:expr, $immutable:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/", $file));
        const ETAG: [u8; 18] = etag_bytes(BODY);
        Asset {
            name: $served,
            content_type: $content_type,
            body: BODY,
            etag: match std::str::from_utf8(&ETAG) {
                Ok(s) => s,
                Err(_) => panic!("etag is ASCII"),
            },
            immutable: $immutable,
        }
    }};
}

/// Every file the UI is made of: the page (also served at `/`, revalidated
/// on every load so a new binary's page is seen at once), and what it names
/// by content hash: the one bundled module, the stylesheet, the boot script
/// that sends the inbox's first requests before the bundle is in, and the
/// icon.
static ASSETS: &[Asset] = &[
    asset!(
        "index.html",
        "index.html",
        "text/html; charset=utf-8",
        false
    ),
    asset!("app.css", APP_CSS_NAME, "text/css; charset=utf-8", true),
    asset!(
        "app.js",
        APP_JS_NAME,
        "text/javascript; charset=utf-8",
        true
    ),
    asset!(
        "boot.js",
        BOOT_JS_NAME,
        "text/javascript; charset=utf-8",
        true
    ),
    asset!("icon.svg", ICON_SVG_NAME, "image/svg+xml", true),
];

/// Total bytes of every embedded file: the most a first visit downloads.
pub fn page_weight() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// Names of the embedded files (under `/ui/`).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.name)
}

/// The UI's routes: `GET /` (the single page) and `GET /ui/{file}`. Generic
/// over the state so it merges into any router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{name}", get(file))
}

/// The UI at `/` and `/ui/…`, and everything else handed to `api` whole:
/// the one line the binary calls. `api` as the fallback (rather than a
/// merge) keeps its own fallback and layers, so an unknown path still gets
/// the API's problem+json 404 and is counted in its metrics.
pub fn mount(api: Router) -> Router {
    router().fallback_service(api)
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        let mut resp = (StatusCode::NOT_FOUND, "no such file in the web UI\n").into_response();
        secure(resp.headers_mut());
        return resp;
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    // The page is revalidated every time, so a new binary never runs an old
    // script: the page names its files by content hash, and those never
    // change under their name.
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    secure(h);
    resp
}

/// The headers every UI response carries.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(path: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn every_page_and_file_carries_the_strict_policy() {
        block_on(async {
            let mut paths = vec!["/".to_owned(), "/ui/nothing-here.js".to_owned()];
            paths.extend(asset_names().map(|n| format!("/ui/{n}")));
            for path in paths {
                let (_, h, _) = get_path(&path, None).await;
                assert_eq!(h[header::CONTENT_SECURITY_POLICY], PAGE_CSP, "{path}");
                assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
                assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            }
        });
    }

    #[test]
    fn the_policy_forbids_inline_script_and_other_hosts() {
        let directives: Vec<&str> = PAGE_CSP.split(';').map(str::trim).collect();
        assert!(directives.contains(&"default-src 'none'"));
        assert!(directives.contains(&"script-src 'self'"));
        assert!(directives.contains(&"frame-ancestors 'none'"));
        assert!(!PAGE_CSP.contains("unsafe"));
        assert!(!PAGE_CSP.contains("http"));
    }

    #[test]
    fn root_is_the_page_and_revalidates_with_its_etag() {
        block_on(async {
            let (status, h, body) = get_path("/", None).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert!(String::from_utf8(body).unwrap().contains("<main"));
            let tag = h[header::ETAG].to_str().unwrap().to_owned();
            let (status, _, body) = get_path("/", Some(&tag)).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED);
            assert!(body.is_empty());
        });
    }

    #[test]
    fn unknown_files_are_404() {
        block_on(async {
            let (status, _, _) = get_path("/ui/..%2FCargo.toml", None).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let (status, _, _) = get_path("/ui/secret", None).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn no_file_has_inline_script_or_a_remote_url() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            if asset.name.ends_with(".html") {
                // Every <script> names a file of ours.
                for (i, _) in text.match_indices("<script") {
                    let tag = &text[i..text[i..].find('>').map_or(text.len(), |e| i + e)];
                    assert!(
                        tag.contains("src=\"/ui/"),
                        "{}: inline script {tag}",
                        asset.name
                    );
                }
                assert!(
                    !has_event_attribute(&text),
                    "{}: inline event handler",
                    asset.name
                );
            }
            // The one URL an SVG must name is its XML namespace, never fetched.
            let text = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            for scheme in ["http://", "https://", "//fonts.", "@import"] {
                assert!(!text.contains(scheme), "{} references {scheme}", asset.name);
            }
        }
    }

    /// True if `html` has an attribute like ` onclick=`.
    fn has_event_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            letters > 0 && rest.as_bytes().get(letters) == Some(&b'=')
        })
    }

    #[test]
    fn the_ui_weighs_under_100_kb() {
        assert!(page_weight() < 100 * 1024, "{} bytes", page_weight());
    }

    #[test]
    fn the_page_names_one_bundled_module_and_every_file_by_its_hash() {
        let html = String::from_utf8_lossy(ASSETS[0].body);
        assert_eq!(ASSETS[0].name, "index.html");
        let scripts: Vec<&str> = html
            .match_indices("<script")
            .map(|(i, _)| &html[i..])
            .collect();
        assert_eq!(
            scripts.len(),
            2,
            "the boot script, then one module for the whole UI"
        );
        assert!(scripts[0].starts_with(&format!("<script src=\"/ui/{BOOT_JS_NAME}\">")));
        assert!(scripts[1].starts_with(&format!(
            "<script type=\"module\" src=\"/ui/{APP_JS_NAME}\">"
        )));
        // Before the stylesheet, or it would wait for it.
        assert!(html.find("<script").unwrap() < html.find("rel=\"stylesheet\"").unwrap());
        for asset in &ASSETS[1..] {
            assert!(asset.immutable, "{}", asset.name);
            let hex = std::str::from_utf8(&etag_bytes(asset.body)[1..17])
                .unwrap()
                .to_owned();
            assert!(
                asset.name.contains(&hex),
                "{} is named by its hash",
                asset.name
            );
            assert!(
                html.contains(&format!("\"/ui/{}\"", asset.name)),
                "index.html names {}",
                asset.name
            );
        }
        let bundle =
            String::from_utf8_lossy(ASSETS.iter().find(|a| a.name == APP_JS_NAME).unwrap().body);
        for line in bundle.lines() {
            assert!(
                !line.starts_with("import ") && !line.starts_with("export "),
                "left in the bundle: {line}"
            );
        }
        for function in [
            "function inboxPage",
            "function startPage",
            "function messagePage",
            "class Feed",
        ] {
            assert!(bundle.contains(function), "{function} is in the bundle");
        }
    }

    #[test]
    fn hashed_files_are_cached_for_good_and_the_page_is_revalidated() {
        block_on(async {
            let (_, h, _) = get_path("/", None).await;
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            for name in [APP_JS_NAME, APP_CSS_NAME, BOOT_JS_NAME, ICON_SVG_NAME] {
                let (status, h, body) = get_path(&format!("/ui/{name}"), None).await;
                assert_eq!(status, StatusCode::OK, "{name}");
                assert!(!body.is_empty());
                assert_eq!(
                    h[header::CACHE_CONTROL],
                    "public, max-age=31536000, immutable",
                    "{name}"
                );
            }
            // The unbundled modules are not served on their own.
            let (status, _, _) = get_path("/ui/inbox.js", None).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        });
    }

    #[test]
    fn etags_differ_when_bytes_differ() {
        assert_ne!(etag_bytes(b"a"), etag_bytes(b"b"));
        assert_eq!(etag_bytes(b"a"), etag_bytes(b"a"));
    }
}
