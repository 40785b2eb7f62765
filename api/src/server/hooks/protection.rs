//! GitHub deployment protection rules, decided by the gate and answered through GitHub's
//! callback (`deployment_callback_url`: `{environment_name, state: approved | rejected,
//! comment}`), as a GitHub App (app id + private key -> RS256 JWT -> installation token) or
//! with a configured token.
//!
//! A protection rule is first recorded as a waiting callback (an event in `github-callbacks`),
//! then the answerer ([`answer_callbacks`], one task per server) asks the gate: once for real
//! when it first sees the callback (recorded; it may open the run's change from the service's
//! template), then as a dry run each time the graph moves or a second passes, and for real
//! again when the answer is no longer pending (the change approved, rejected, or its window
//! reached). Then it posts the answer and records it. A restarted server finds the waiting
//! callbacks in the log and goes on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cmdb_core::release::observe::{CallbackAnswered, CallbackPending, Callbacks};
use cmdb_core::release::{ReleaseCommand, ReleaseKey, ReleaseRead};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::app::releases::{GateAsk, ReleaseRef};

/// How long the answerer waits for the graph to move before it looks again, in milliseconds.
pub const RECHECK_INTERVAL_MS: u64 = 1_000;
/// Longest GitHub may take to answer one call, in milliseconds.
pub const GITHUB_CALL_TIMEOUT_MS: u64 = 10_000;
/// How long the App's JWT is valid, in seconds (GitHub allows at most 600).
pub const JWT_LIFETIME_SECONDS: i64 = 540;

/// How the engine authenticates to GitHub.
pub struct GithubAuth {
    api_url: String,
    app: Option<(u64, jsonwebtoken::EncodingKey)>,
    token: Option<String>,
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl GithubAuth {
    /// From the settings: `None` when neither an App nor a token is configured.
    pub fn from_settings(settings: &crate::settings::ServeSettings) -> Result<Option<GithubAuth>, String> {
        let app = match (&settings.github_app_id, &settings.github_app_private_key_file) {
            (Some(id), Some(path)) => {
                let pem =
                    std::fs::read(path).map_err(|e| format!("github_app_private_key_file {}: {e}", path.display()))?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|e| {
                    format!("github_app_private_key_file {}: not an RSA key in PEM: {e}", path.display())
                })?;
                Some((*id, key))
            }
            _ => None,
        };
        let token = settings.github_token.as_ref().map(|t| t.0.clone());
        if app.is_none() && token.is_none() {
            return Ok(None);
        }
        Ok(Some(GithubAuth { api_url: settings.github_api_url.trim_end_matches('/').to_owned(), app, token }))
    }

    fn request(&self, client: &reqwest::Client, url: &str, bearer: &str) -> reqwest::RequestBuilder {
        client
            .post(url)
            .bearer_auth(bearer)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "cmdb")
            .timeout(Duration::from_millis(GITHUB_CALL_TIMEOUT_MS))
    }

    /// A token to call GitHub with: the installation's (as the App) or the configured one.
    async fn token(&self, client: &reqwest::Client, installation: Option<u64>) -> Result<String, String> {
        if let (Some((app_id, key)), Some(installation)) = (&self.app, installation) {
            let now = chrono::Utc::now().timestamp();
            // Backdated a minute against clock drift, as GitHub advises.
            let claims = AppClaims { iat: now - 60, exp: now + JWT_LIFETIME_SECONDS, iss: app_id.to_string() };
            let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, key)
                .map_err(|e| format!("cannot sign the App's JWT: {e}"))?;
            let url = format!("{}/app/installations/{installation}/access_tokens", self.api_url);
            let response = self.request(client, &url, &jwt).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("installation token: HTTP {}", response.status().as_u16()));
            }
            let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
            return body["token"].as_str().map(str::to_owned).ok_or_else(|| "installation token: no token".into());
        }
        self.token.clone().ok_or_else(|| "no GitHub App installation and no --github-token to answer with".into())
    }

    /// Posts the answer to the callback.
    async fn answer(
        &self,
        client: &reqwest::Client,
        pending: &CallbackPending,
        state: &str,
        comment: &str,
    ) -> Result<(), String> {
        if !pending.callback_url.starts_with(&format!("{}/", self.api_url)) {
            return Err(format!("the callback {} is not under github_api_url {}", pending.callback_url, self.api_url));
        }
        let token = self.token(client, pending.installation).await?;
        let body = json!({ "environment_name": pending.environment_name, "state": state, "comment": comment });
        let response =
            self.request(client, &pending.callback_url, &token).json(&body).send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("callback: HTTP {}", response.status().as_u16()))
        }
    }
}

/// The gate call a waiting callback stands for.
pub fn ask_of(pending: &CallbackPending) -> GateAsk {
    GateAsk {
        ci: pending.ci.to_string(),
        environment: pending.environment,
        artifact: cmdb_core::release::gate::Artifact {
            name: pending.artifact.clone(),
            version: pending.version.clone(),
            digest: pending.digest.clone(),
        },
        change: None,
        release: None::<ReleaseRef>,
        pipeline: Some(cmdb_core::release::Pipeline {
            provider: "github".into(),
            run_id: pending.run_id.clone(),
            run_url: None,
        }),
    }
}

async fn waiting(app: &App) -> Result<Callbacks, cmdb_core::Error> {
    match cmdb_core::decider::fold::load(app.store.as_ref(), &ReleaseKey::Callbacks).await? {
        ReleaseRead::Callbacks(callbacks) => Ok(callbacks),
        _ => Ok(Callbacks::default()),
    }
}

fn comment_of(outcome: &cmdb_core::release::gate::GateOutcome) -> String {
    let change = outcome.change.as_deref().map_or_else(|| "no change".to_owned(), |c| format!("change {c}"));
    let reasons: Vec<String> = outcome.reasons.iter().map(|r| format!("{}: {}", r.code, r.message)).collect();
    let text = format!("cmdb gate: {} under {change}. {}", outcome.decision.as_str(), reasons.join("; "));
    text.chars().take(cmdb_core::release::MAX_TEXT_BYTES / 4).collect()
}

/// Answers waiting callbacks as the gate decides them, until `shutdown`.
pub async fn answer_callbacks(app: Arc<App>, auth: GithubAuth, principal: String, shutdown: CancellationToken) {
    let client = reqwest::Client::new();
    let mut asked: BTreeSet<String> = BTreeSet::new();
    loop {
        match waiting(&app).await {
            Ok(callbacks) => {
                for pending in callbacks.pending.values() {
                    answer_one(&app, &auth, &client, &principal, pending, &mut asked).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the waiting callbacks"),
        }
        let next = app.graph.read().applied() + 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = app.graph.wait_for(next, Duration::from_millis(RECHECK_INTERVAL_MS)) => {}
        }
    }
}

async fn answer_one(
    app: &App,
    auth: &GithubAuth,
    client: &reqwest::Client,
    principal: &str,
    pending: &CallbackPending,
    asked: &mut BTreeSet<String>,
) {
    let metadata = cmdb_core::Metadata::new(
        cmdb_core::Actor { principal: principal.into(), token_id: None },
        cmdb_core::Source::Webhook,
    );
    let ask = ask_of(pending);
    // The first look is a real call (recorded; it may open the run's change), later ones dry.
    let first = asked.insert(pending.callback_url.clone());
    let answer = match app.gate(&ask, !first, metadata.clone()).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%error, callback = %pending.callback_url, "the gate cannot answer a protection rule");
            return;
        }
    };
    use cmdb_core::release::gate::GateDecision;
    if answer.outcome.decision == GateDecision::Pending {
        return;
    }
    let outcome = if first {
        answer.outcome
    } else {
        match app.gate(&ask, false, metadata.clone()).await {
            Ok(real) if real.outcome.decision != GateDecision::Pending => real.outcome,
            _ => return,
        }
    };
    let state = if outcome.decision == GateDecision::Allow { "approved" } else { "rejected" };
    let comment = comment_of(&outcome);
    if let Err(error) = auth.answer(client, pending, state, &comment).await {
        tracing::warn!(%error, callback = %pending.callback_url, "could not answer a protection rule; will retry");
        asked.remove(&pending.callback_url);
        return;
    }
    let answered = CallbackAnswered {
        callback_url: pending.callback_url.clone(),
        state: state.to_owned(),
        comment: comment.clone(),
    };
    if let Err(error) = app.release(&ReleaseCommand::CallbackAnswered(Box::new(answered)), metadata).await {
        tracing::warn!(%error, callback = %pending.callback_url, "answered a protection rule but could not record it");
    }
}
