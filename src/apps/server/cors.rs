//! Cross-origin access (`--cors ORIGIN`, repeatable, or `*`): answers carry
//! `Access-Control-Allow-Origin` for a request from an allowed origin, and preflight `OPTIONS`
//! requests are answered 204 with the methods and headers allowed, without the API key (a
//! browser sends none with a preflight). Without `--cors` no CORS header is sent and `OPTIONS`
//! is refused (405), so that browsers keep other sites' pages off the API.

use anyhow::{bail, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The origins allowed; none: CORS is off.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

const METHODS: &str = "GET, HEAD, POST, OPTIONS";
const HEADERS: &str = "authorization, content-type";
/// Headers of answers a page may read besides the plain ones.
const EXPOSED: &str = "x-mood-ignored, retry-after";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

impl Cors {
    /// From the `--cors` values: `*`, or origins such as `https://example.com` or
    /// `http://localhost:3000` (scheme, host and port; no path).
    pub fn new(values: &[String]) -> Result<Self> {
        let mut cors = Self::default();
        for value in values {
            let v = value.trim();
            if v == "*" {
                cors.any = true;
                continue;
            }
            let origin = v.strip_suffix('/').unwrap_or(v).to_ascii_lowercase();
            let Some((scheme, host)) = origin.split_once("://") else {
                bail!("--cors {value}: give an origin such as https://example.com, or *");
            };
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            let host_ok = !host.is_empty()
                && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
            if !scheme_ok || !host_ok {
                bail!(
                    "--cors {value}: an origin is a scheme, a host and maybe a port \
                     (https://example.com, http://localhost:3000), with no path"
                );
            }
            match HeaderValue::from_str(&origin) {
                Ok(h) => cors.origins.push(h),
                Err(_) => bail!("--cors {value}: not a valid origin"),
            }
        }
        Ok(cors)
    }

    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request with these headers, if allowed.
    fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = headers.get(header::ORIGIN)?;
        self.origins.iter().find(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())).cloned()
    }
}

/// The headers a preflight may ask for: authorization and content-type, and whatever else
/// it names (header names only; the API reads no other header, so allowing them is harmless
/// and lets clients that add their own headers work).
fn allowed_headers(headers: &HeaderMap) -> HeaderValue {
    let mut names: Vec<String> = HEADERS.split(", ").map(str::to_string).collect();
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for name in asked.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        let token = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if token && !names.contains(&name) && names.len() < 32 {
            names.push(name);
        }
    }
    HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static(HEADERS))
}

/// The middleware: preflights answered here, other answers marked.
pub async fn handle(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    if !cors.enabled() {
        return next.run(req).await;
    }
    let allowed = cors.allowed(req.headers());
    if req.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(header::ALLOW, HeaderValue::from_static(METHODS));
        if let Some(origin) = allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers(req.headers()));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        }
        if !cors.any {
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    }
    if !cors.any {
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        let c =
            Cors::new(&["https://Example.com/".into(), "http://localhost:3000".into()]).unwrap();
        assert!(c.enabled() && !c.any);
        assert_eq!(c.origins, ["https://example.com", "http://localhost:3000"]);
        assert!(Cors::new(&["*".into()]).unwrap().any);
        assert!(!Cors::new(&[]).unwrap().enabled());
        for bad in ["example.com", "https://example.com/path", "https://", "http://a b", "ftp//x"] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflights_may_ask_for_more_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("X-Stainless-OS, content-type, bad header!"),
        );
        assert_eq!(allowed_headers(&h), "authorization, content-type, x-stainless-os");
    }
}
