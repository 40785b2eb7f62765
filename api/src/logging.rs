//! Logging set-up that keeps secrets out of every log line at every level (issue 20): the
//! libraries that log frames or headers at debug and trace (WebSocket, HTTP) are capped at
//! `info` whatever `CMDB_LOG` asks, and every line is redacted before it is written: bearer
//! tokens (`cmdb_` and 64 hex digits, or whatever follows `Bearer `) become `[redacted]`.
//! User text in log fields is escaped by the formatter (`Debug` of strings), so control
//! characters from input do not reach the terminal raw.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Libraries whose debug and trace output can carry request payloads or headers, with the
/// most they may log.
pub const LIBRARY_CEILINGS: &[(&str, &str)] = &[
    ("tungstenite", "info"),
    ("tokio_tungstenite", "info"),
    ("hyper", "info"),
    ("hyper_util", "info"),
    ("h2", "info"),
    ("reqwest", "info"),
    ("async_graphql", "info"),
    ("async_graphql_axum", "info"),
    ("axum", "info"),
    ("tower_http", "info"),
];

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// The filter: `CMDB_LOG` (or `default_level`), with the libraries capped.
pub fn filter(requested: Option<&str>, default_level: &str) -> EnvFilter {
    let mut directives = requested.filter(|r| !r.trim().is_empty()).unwrap_or(default_level).to_owned();
    for (target, ceiling) in LIBRARY_CEILINGS {
        directives.push_str(&format!(",{target}={ceiling}"));
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// `text` with every bearer token replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let token = find_token(rest);
        let bearer = find_ascii_case_insensitive(rest, "bearer ");
        let next = match (token, bearer) {
            (Some(t), Some(b)) => Some(t.min(b)),
            (t, b) => t.or(b),
        };
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        if token == Some(at) {
            out.push_str(REDACTED);
            rest = &rest[at + TOKEN_BYTES..];
        } else {
            out.push_str(&rest[at..at + "bearer ".len()]);
            out.push_str(REDACTED);
            let after = &rest[at + "bearer ".len()..];
            let end =
                after.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\').unwrap_or(after.len());
            rest = &after[end..];
        }
    }
}

const TOKEN_BYTES: usize = "cmdb_".len() + 64;

fn find_token(text: &str) -> Option<usize> {
    text.match_indices("cmdb_").map(|(at, _)| at).find(|&at| is_token(&text[at..]))
}

fn is_token(text: &str) -> bool {
    text.len() >= TOKEN_BYTES && text.as_bytes()[5..TOKEN_BYTES].iter().all(u8::is_ascii_hexdigit)
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    haystack.as_bytes().windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Writes log lines to standard error, redacted.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingStderr;

/// One line being written.
pub struct RedactingWriter {
    buffer: Vec<u8>,
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = redact(&String::from_utf8_lossy(&self.buffer));
        self.buffer.clear();
        std::io::stderr().lock().write_all(text.as_bytes())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { buffer: Vec::with_capacity(256) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_bearer_values_are_redacted_wherever_they_appear() {
        let token = format!("cmdb_{}", "ab12".repeat(16));
        let line = format!(
            "frame {{\"type\":\"connection_init\",\"payload\":{{\"Authorization\":\"Bearer {token}\"}}}} token={token}x"
        );
        let redacted = redact(&line);
        assert!(!redacted.contains(&token), "{redacted}");
        assert!(!redacted.contains("ab12ab12"), "{redacted}");
        assert_eq!(redacted.matches(REDACTED).count(), 2, "{redacted}");
        assert!(redacted.ends_with(&format!("token={REDACTED}x")), "{redacted}");
        assert_eq!(redact("authorization: bearer s3cr3t-value rest"), format!("authorization: bearer {REDACTED} rest"));
        // Not a token: too short, or not hex.
        assert_eq!(redact("cmdb_12 and cmdb_zz"), "cmdb_12 and cmdb_zz");
        assert_eq!(redact("no secrets here"), "no secrets here");
        assert_eq!(redact("ünïcödé cmdb_"), "ünïcödé cmdb_");
    }

    #[test]
    fn libraries_are_capped_even_at_trace() {
        let filter = filter(Some("trace"), "info").to_string();
        for (target, ceiling) in LIBRARY_CEILINGS {
            assert!(filter.contains(&format!("{target}={ceiling}")), "{filter}");
        }
        // A broken CMDB_LOG falls back to the default rather than logging everything.
        assert!(!filter_fallback_logs_everything());
    }

    fn filter_fallback_logs_everything() -> bool {
        filter(Some("[[[not a directive"), "warn").to_string().contains("trace")
    }
}
