//! A real browser for the tests: headless Chromium driven over the Chrome DevTools Protocol
//! (a WebSocket of JSON messages), with every host but this machine unresolvable, as on a
//! network without internet. Under `CI=true` a missing Chromium fails the test; elsewhere
//! the test says it skipped and why.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// How long a page may take to reach a state a test waits for.
pub const WAIT_MS: u64 = 20_000;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_path() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        (found.status.success() && !path.is_empty()).then_some(path)
    })
}

impl Browser {
    /// Starts Chromium, or `None` (said on stderr) when it is not installed outside CI.
    pub async fn start(test: &str) -> Option<Browser> {
        let Some(path) = chromium_path() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: Chromium is not installed (CI=true: .ci/run installs it)"
            );
            eprintln!("{test}: SKIPPED: Chromium is not installed (apt-get install chromium)");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(path)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                // No internet: every name but this machine's fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse::<u16>().ok())
            {
                break port;
            }
            if started.elapsed() > Duration::from_millis(WAIT_MS) {
                let _ = child.kill();
                panic!("{test}: Chromium did not open its DevTools port");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let page_url = loop {
            let targets: Value = match reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let page = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(page) = page {
                break page;
            }
            assert!(started.elapsed() < Duration::from_millis(WAIT_MS), "{test}: no page target");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (page, _) = tokio_tungstenite::connect_async(page_url.as_str()).await.expect("DevTools socket");
        Some(Browser { child, _profile: profile, page, next_id: 0 })
    }

    /// Sends one DevTools command and returns its result (events in between are dropped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page.send(Message::text(message)).await.expect("send");
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.page.next()).await.expect("DevTools answers in time");
            let Some(Ok(Message::Text(text))) = next else { continue };
            let answer: Value = serde_json::from_str(text.as_str()).expect("json");
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }))
            .await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'").await;
    }

    /// Waits until `condition` (JavaScript) is true; panics with the page's text past [`WAIT_MS`].
    pub async fn wait_for(&mut self, condition: &str) {
        let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            if self.eval(&format!("Boolean({condition})")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''").await;
                panic!("waited {WAIT_MS} ms for {condition}; the page reads: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the window's size in CSS pixels (screenshots are taken at this size).
    pub async fn set_viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    /// Writes a PNG of what the page shows now to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let data = shot["data"].as_str().expect("screenshot data");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).expect("base64 PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot directory");
        }
        std::fs::write(path, bytes).expect("screenshot written");
    }

    /// The resources the page loaded from anywhere but `origin` (`data:` URLs aside).
    pub async fn foreign_resources(&mut self, origin: &str) -> Value {
        self.eval(&format!(
            "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith({}) && !n.startsWith('data:'))",
            json!(origin)
        ))
        .await
    }
}
