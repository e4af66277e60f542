//! The exporter's HTTP side: which exposition format a scraper asked for, and the response
//! to each request. The server is `tiny_http` (it parses requests on threads of its own and
//! hands them over whole); the loop answers them one at a time on the thread that owns the
//! BPF sessions.

use prometheus_client::registry::Registry;

/// `Content-Type` of OpenMetrics text 1.0.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// Prometheus's classic text format 0.0.4.
    Classic,
}

/// The format an `Accept` header asks for: OpenMetrics when it lists
/// `application/openmetrics-text` with a weight at least that of any classic type
/// (`text/plain`, `*/*`) it lists; the classic text format otherwise (and without the header).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Classic;
    };
    let (mut om, mut classic) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= classic {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// Encodes `registry` in `format`: the body and its `Content-Type`.
pub fn encode(
    registry: &Registry,
    format: Format,
) -> Result<(String, &'static str), std::fmt::Error> {
    let mut body = String::new();
    match format {
        Format::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut body, registry)?;
            Ok((body, OPENMETRICS))
        }
        Format::Classic => {
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
            Ok((
                body,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ))
        }
    }
}

/// What a request is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or `HEAD`).
    Metrics(Format),
    /// `GET /`: a line that says where the metrics are.
    Index,
    /// Any other path.
    NotFound,
    /// A method other than GET or HEAD.
    BadMethod,
}

/// Routes a request.
pub fn route(method: &tiny_http::Method, url: &str, accept: Option<&str>) -> Route {
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return Route::BadMethod;
    }
    let path = url.split('?').next().unwrap_or("");
    match path {
        "/metrics" => Route::Metrics(negotiate(accept)),
        "/" => Route::Index,
        _ => Route::NotFound,
    }
}

/// A plain-text response.
pub fn text(
    status: u16,
    body: &str,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_others_the_classic_format() {
        // What Prometheus 2.42 sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Classic);
        assert_eq!(negotiate(Some("*/*")), Format::Classic);
        assert_eq!(negotiate(Some("text/plain")), Format::Classic);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")),
            Format::Classic
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
    }

    #[test]
    fn routes() {
        use tiny_http::Method;
        assert_eq!(
            route(&Method::Get, "/metrics?x=1", None),
            Route::Metrics(Format::Classic)
        );
        assert_eq!(route(&Method::Get, "/", None), Route::Index);
        assert_eq!(route(&Method::Get, "/other", None), Route::NotFound);
        assert_eq!(route(&Method::Post, "/metrics", None), Route::BadMethod);
    }
}
