//! The HTTP side of the load tools: start a `cmdb serve` on a fresh data directory and take
//! the bootstrap token it prints; keep-alive HTTP/1.1 connections that POST GraphQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A spawned server: stopped (SIGTERM) when dropped.
pub struct Spawned {
    /// The server process.
    pub child: Child,
    /// Its base URL.
    pub url: String,
    /// An admin token.
    pub token: String,
    /// Kept for the server's lifetime.
    pub dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve` on `data_dir` (default: a fresh temporary one) and port 0.
pub fn spawn_server(binary: &str, data_dir: Option<&std::path::Path>, extra: &[&str]) -> anyhow::Result<Spawned> {
    let dir = tempfile::tempdir()?;
    let path = data_dir.unwrap_or(dir.path());
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--max-connections", "4096", "--data-dir"])
        .arg(path)
        .args(extra)
        .env("CMDB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {binary}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut token = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(found) = line.split_whitespace().find(|w| w.starts_with("cmdb_")) {
            token = Some(found.to_owned());
        }
        if let Some(rest) = line.split("http://").nth(1) {
            // The server prints its GraphQL URL.
            let url = format!("http://{}", rest.split_whitespace().next().context("url")?);
            std::thread::spawn(move || for _ in lines {});
            let token = token.context("no token printed (serve a new data directory, or pass --url and --token)")?;
            return Ok(Spawned { child, url, token, dir });
        }
    }
    bail!("{binary} exited before it listened")
}

/// Where to POST: `host:port` and path, from an `http://` URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub host_port: String,
    /// The CIs from one to the other.
    pub path: String,
}

impl Endpoint {
    /// Reads an `http://host:port` URL.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let without_scheme = url.strip_prefix("http://").context("only http:// URLs")?;
        let (host_port, path) = without_scheme
            .split_once('/')
            .map(|(h, p)| (h.to_owned(), format!("/{p}")))
            .unwrap_or((without_scheme.to_owned(), "/".into()));
        Ok(Endpoint { host_port, path })
    }
}

/// One keep-alive connection.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    endpoint: Endpoint,
}

impl Connection {
    /// Opens a keep-alive connection.
    pub async fn open(endpoint: &Endpoint) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(&endpoint.host_port).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(driver);
        Ok(Connection { sender, endpoint: endpoint.clone() })
    }

    /// POSTs a GraphQL body; answers the HTTP status and the response body.
    pub async fn post(&mut self, token: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let request = Request::post(&self.endpoint.path)
            .header("host", &self.endpoint.host_port)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// POSTs `body` to `path` with `headers`; answers the HTTP status and the response body.
    pub async fn send(&mut self, path: &str, headers: &[(&str, &str)], body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let mut request = Request::post(path).header("host", &self.endpoint.host_port);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// A GraphQL request that must succeed; answers `data`.
    pub async fn graphql(
        &mut self,
        token: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let body = Bytes::from(serde_json::json!({ "query": query, "variables": variables }).to_string());
        let (status, bytes) = self.post(token, body).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        if status != 200 || value.get("errors").is_some() {
            bail!("{query}: HTTP {status}: {value}");
        }
        Ok(value["data"].clone())
    }
}
