//! A tool about a mailbox another host owns (with `[cluster]`) runs its REST
//! equivalent through the API router in this process, so through the same
//! cluster routing as a REST client's request (`uncorreo_api::cluster`: the
//! owner runs it over the hop with the caller's credential and checks it;
//! a wait runs here on the owner's notices, `realtime::remote`). There is
//! no second routing path to keep equal to the first: what REST answers for
//! a mailbox on any host is what the tool answers.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use uncorreo_api::realtime::wait::OnSubscribed;
use uncorreo_api::{Kind, Problem};

/// How to ask the API about one mailbox: the router, the credential the
/// owner checks, and the client's address (for the owner's rate limits).
pub(crate) struct Rest {
    pub(crate) api: Router,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) connect: Option<ConnectInfo<SocketAddr>>,
}

/// One API request's answer body, at most `limit` bytes (`Err(None)` past it).
pub(crate) enum Answer {
    Body(Bytes),
    TooLarge,
}

impl Rest {
    /// Run one request; a non-2xx answer is the problem it describes.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        subscribed: Option<OnSubscribed>,
        limit: usize,
    ) -> Result<Answer, Problem> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).map_err(|_| internal())?)
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).map_err(|_| Problem::not_found())?;
        if let Some(connect) = self.connect {
            request.extensions_mut().insert(connect);
        }
        if let Some(subscribed) = subscribed {
            request.extensions_mut().insert(subscribed);
        }
        let Ok(response) = self.api.clone().oneshot(request).await;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = match axum::body::to_bytes(response.into_body(), limit).await {
            Ok(bytes) => bytes,
            Err(_) if status.is_success() => return Ok(Answer::TooLarge),
            Err(_) => Bytes::new(),
        };
        if !status.is_success() {
            return Err(Problem::from_answer(status.as_u16(), retry_after, &bytes));
        }
        Ok(Answer::Body(bytes))
    }

    /// [`Rest::call`] for a JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        subscribed: Option<OnSubscribed>,
        limit: usize,
    ) -> Result<T, Problem> {
        match self.call(method, path, body, subscribed, limit).await? {
            Answer::Body(bytes) => serde_json::from_slice(&bytes).map_err(|_| internal()),
            Answer::TooLarge => Err(internal()),
        }
    }
}

fn internal() -> Problem {
    Problem::new(Kind::Internal, "the API's answer could not be read")
}

/// `/api/v1/mailboxes/{address}` plus `tail`. A segment that would change
/// the path (`/`, `?`, `#`, `%`, spaces, controls) names no mailbox or
/// message, so it is the one not-found answer, never another route.
pub(crate) fn mailbox_path(address: &str, tail: &[&str]) -> Result<String, Problem> {
    let mut path = format!("/api/v1/mailboxes/{}", segment(address.trim())?);
    for part in tail {
        path.push('/');
        path.push_str(segment(part)?);
    }
    Ok(path)
}

fn segment(s: &str) -> Result<&str, Problem> {
    let bad = |c: char| c.is_control() || c.is_whitespace() || "/?#%\\".contains(c);
    if s.is_empty() || s == "." || s == ".." || s.chars().any(bad) {
        return Err(Problem::not_found());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_never_leaves_its_route() {
        assert_eq!(
            mailbox_path("a@x.test", &["messages", "7"]).ok().as_deref(),
            Some("/api/v1/mailboxes/a@x.test/messages/7")
        );
        for bad in [
            "a@x/../keys",
            "a@x?since=1",
            "a@x#",
            "a%40x",
            "..",
            "a b@x",
            "",
        ] {
            assert!(mailbox_path(bad, &[]).is_err(), "{bad}");
        }
        assert!(mailbox_path("a@x", &["../../keys"]).is_err());
    }
}
