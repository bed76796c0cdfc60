//! What a web app needs beyond the API itself: CORS for the configured origins (none by default).
//!
//! Callers authenticate with an `Authorization` header, never with cookies, so no response allows credentials,
//! and `*` (any origin) is as safe as the bearer tokens themselves. Preflights are answered before routing, and
//! the headers a client reads (`Retry-After`, `WWW-Authenticate`, the echoed `Idempotency-Key`) are exposed.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);
/// Origins listed at most.
const ORIGINS_MAX: usize = 64;

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (bearer tokens only, never cookies, so no credentials are allowed either way).
    Any,
    /// Exactly these origins, lower-cased, at most 64.
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// `*`, or a comma-separated list of origins (`https://app.example.com`, `http://localhost:5173`): a scheme
    /// of http or https, a host, an optional port, and nothing else, as a browser sends them in `Origin`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(Self::Any);
        }
        let origins = text
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(origin)
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err("list at least one origin, or `*`".into());
        }
        if origins.len() > ORIGINS_MAX {
            return Err(format!("at most {ORIGINS_MAX} origins"));
        }
        Ok(Self::List(origins))
    }

    /// The layer that answers preflights and marks responses for these origins.
    pub fn layer(&self) -> CorsLayer {
        let allow = match self {
            Self::Any => AllowOrigin::any(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::IF_MATCH,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

/// A directory holding a built console (its `index.html`), as the setting names it.
pub fn console_dir(text: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::path::PathBuf::from(text);
    if !dir.join("index.html").is_file() {
        return Err(format!(
            "{} holds no index.html: build the console first (cd clients/console && npm ci && npm run build) \
             and name its dist directory",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The console's files at `/console`, `index.html` for the directory itself.
pub fn console(dir: &std::path::Path) -> tower_http::services::ServeDir {
    tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true)
}

fn origin(text: &str) -> Result<HeaderValue, String> {
    let bad = || {
        format!(
            "{text:?} is not an origin: write scheme://host[:port], for example https://app.example.com"
        )
    };
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(bad)?;
    // An IPv6 host is bracketed, colons and all.
    let split_at = rest.find(']').map_or(0, |end| end + 1);
    let (host, port) = match rest[split_at..].split_once(':') {
        Some((_, port)) => (&rest[..rest.len() - port.len() - 1], Some(port)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if !host_ok || !port_ok {
        return Err(bad());
    }
    // Browsers send the scheme and host in lower case; an origin configured otherwise would never match.
    HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_as_a_browser_sends_them() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            CorsOrigins::parse(" https://app.example.com, http://localhost:5173 ,"),
            Ok(CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("http://localhost:5173"),
            ]))
        );
        assert!(CorsOrigins::parse("http://[::1]:8080").is_ok());
        assert!(CorsOrigins::parse("http://[::1]").is_ok());
        assert_eq!(
            CorsOrigins::parse("https://App.Example.com"),
            Ok(CorsOrigins::List(vec![HeaderValue::from_static(
                "https://app.example.com"
            )]))
        );
        for bad in [
            "",
            ",",
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app example.com",
            "*, https://app.example.com",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad:?}");
        }
        let many = vec!["https://a.example.com"; ORIGINS_MAX + 1].join(",");
        assert!(CorsOrigins::parse(&many).is_err());
    }
}
