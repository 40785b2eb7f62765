//! A minimal graphql-transport-ws client over tokio-tungstenite.
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::TestServer;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn request(server: &TestServer, token: Option<&str>) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = server.ws_url().into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    }
    request
}

pub async fn connect(server: &TestServer, token: Option<&str>) -> Socket {
    tokio_tungstenite::connect_async(request(server, token)).await.expect("upgrade").0
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.expect("send");
}

pub async fn init(socket: &mut Socket, payload: Value) {
    send(socket, json!({ "type": "connection_init", "payload": payload })).await;
    let ack = next_json(socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

pub async fn subscribe(socket: &mut Socket, id: &str, query: &str) {
    send(socket, json!({ "id": id, "type": "subscribe", "payload": { "query": query } })).await;
}

/// The next text message as JSON (pings answered), or a synthetic `{"type":"closed"}`.
pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "ping" {
                    send(socket, json!({ "type": "pong" })).await;
                    continue;
                }
                return value;
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((0, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                return json!({ "type": "closed", "code": code, "reason": reason });
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return json!({ "type": "closed", "code": 0, "reason": "" }),
        }
    }
}

/// The first GraphQL error of a `next` or `error` message, if it carries one.
pub fn first_error(message: &Value) -> Option<Value> {
    let payload = &message["payload"];
    payload["errors"].get(0).or_else(|| payload.get(0)).cloned()
}
