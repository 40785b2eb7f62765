//! `cmdb serve --demo`: loads the small demo estate into an empty data directory, starts
//! normally on a directory that already holds it, and refuses any other.

use cmdb_core::{Clock, EventStore};
use cmdb_fixtures::{DEMO_MARKER_TYPE, DemoMarker, EstateSize, EstateSpec, load_into};

use super::StartError;

/// The demo's seed: the same estate every time.
pub const DEMO_SEED: u64 = 20_261_125;
/// How far back the demo's history reaches.
pub const DEMO_HISTORY_DAYS: u32 = 180;

/// Loads the demo estate into an empty log, accepts a log that holds it, refuses any other.
pub async fn prepare(store: &dyn EventStore, clock: &dyn Clock) -> Result<(), StartError> {
    let head = store.head().await.map_err(cmdb_core::Error::from)?.position;
    if head == 0 {
        // End a minute ago so the bulk load is never "in the future" of the store's clock.
        let end = clock.now().saturating_add_micros(-60_000_000);
        let spec = EstateSpec { size: EstateSize::Small, seed: DEMO_SEED, end, history_days: DEMO_HISTORY_DAYS };
        let report = load_into(store, &spec).await.map_err(|e| StartError::Io(format!("cannot load the demo: {e}")))?;
        tracing::info!(
            cis = report.cis,
            relationships = report.relationships,
            events = report.events,
            "loaded the demo estate"
        );
        println!(
            "cmdb: loaded the demo estate: {} CIs, {} relationships, {} events from {} to {}",
            report.cis, report.relationships, report.events, report.first, report.last
        );
        return Ok(());
    }
    let first = store.event_at(1).await.map_err(cmdb_core::Error::from)?;
    let holds_demo = first
        .filter(|e| e.event_type == DEMO_MARKER_TYPE)
        .and_then(|e| e.data_as::<DemoMarker>().ok())
        .is_some_and(|marker| marker.size == EstateSize::Small);
    if holds_demo {
        return Ok(());
    }
    Err(StartError::Settings(
        "--demo needs an empty data directory (or one that already holds the demo); this one holds another log. Start without --demo, or pick another --data-dir".into(),
    ))
}

/// The demo's stories, each told once: releases, the tools' hooks, changes.
pub async fn stories(app: &crate::app::App) -> Result<(), StartError> {
    release_story(app).await.map_err(|e| StartError::Io(format!("the demo's release story: {e}")))?;
    hooks(app).await.map_err(|e| StartError::Io(format!("the demo's hooks: {e}")))?;
    change_story(app).await.map_err(|e| StartError::Io(format!("the demo's change story: {e}")))
}

/// The demo's release story, told once through the application layer as real users would
/// (so every step is an ordinary event, visible at any moment): release REL-000001 planned,
/// built, accepted by an approver, gated, deployed and reviewed; REL-000002 deployed through a
/// pipeline change from a template, an incident linked, then rolled back under an emergency
/// change, restoring the previous versions.
pub async fn release_story(app: &crate::app::App) -> Result<(), crate::app::AppError> {
    use cmdb_core::release::{ReleaseAction, ReleaseCommand, ReportedOutcome};

    let (targets, crew) = {
        let graph = app.graph.read();
        let position = graph.applied();
        if !graph.release_book().releases_at(position, None, 1).is_empty() {
            return Ok(());
        }
        let filter = cmdb_projections::graph::CiFilter {
            classes: Some(vec![cmdb_core::model::CiClass::Application]),
            statuses: Some(vec![cmdb_core::model::Status::Live]),
            ..Default::default()
        };
        let (apps, _) = graph.cis_at(position, &filter, None, 2);
        (apps.iter().map(|c| (c.id, c.name.clone())).collect::<Vec<_>>(), demo_crew(app))
    };
    let (Some((ci, name)), Some(crew)) = (targets.first().cloned(), crew) else {
        tracing::warn!("the demo estate has no live application or no crew; no release story");
        return Ok(());
    };
    let as_ = story_actor;
    let digest = |text: &str| -> cmdb_core::release::ArtifactDigest {
        format!("sha256:{}", blake3::hash(text.as_bytes()).to_hex()).parse().expect("a blake3 hex is 64 digits")
    };
    let artifact = format!("registry.example.com/acme/{}", name.to_lowercase().replace(' ', "-"));
    let release = |number: &str, version: &str| cmdb_core::release::ReleaseDetails {
        title: format!("{name} {version} ({number})"),
        release_type: cmdb_core::release::ReleaseType::Minor,
        changes: Vec::new(),
        versions: vec![cmdb_core::release::CiVersion {
            ci,
            artifact: artifact.clone(),
            version: version.into(),
            digest: digest(version),
        }],
        environments: vec![cmdb_core::model::Environment::Production],
        release_plan: "Rolling update, one instance at a time; watch error rates for 15 minutes".into(),
        roll_back_plan: "Redeploy the previous digest through the same pipeline".into(),
        baseline: None,
        acceptance: vec![cmdb_core::release::AcceptanceStep {
            environment: cmdb_core::model::Environment::Production,
            name: "go/no-go".into(),
            role: cmdb_core::access::Role::Approver,
        }],
    };
    pipeline_template(app, &crew, ci).await?;

    let mut previous = None;
    for (run, version) in [("demo-run-1", "2.4.0"), ("demo-run-2", "2.5.0")] {
        let release_id = cmdb_core::ids::ReleaseId(uuid::Uuid::now_v7());
        app.release(&ReleaseCommand::Plan { release_id, details: release(run, version) }, as_(&crew.manager)).await?;
        let act = |action| ReleaseCommand::Act { release_id, action, note: None };
        app.release(&act(ReleaseAction::Build), as_(&crew.manager)).await?;
        let accept = ReleaseCommand::Accept {
            release_id,
            environment: cmdb_core::model::Environment::Production,
            step: "go/no-go".into(),
            note: Some("error budget healthy; go".into()),
        };
        app.release(&accept, as_(&crew.approvers[0])).await?;
        let ask = crate::app::releases::GateAsk {
            ci: ci.to_string(),
            environment: cmdb_core::model::Environment::Production,
            artifact: cmdb_core::release::gate::Artifact {
                name: artifact.clone(),
                version: version.into(),
                digest: digest(version),
            },
            change: None,
            release: Some(crate::app::releases::ReleaseRef::Id(release_id)),
            pipeline: Some(cmdb_core::release::Pipeline {
                provider: "github".into(),
                run_id: run.into(),
                run_url: Some(format!("https://github.com/acme/deploy/actions/runs/{run}")),
            }),
        };
        if !gate_until_allowed(app, &crew, &ask).await? {
            return Ok(());
        }
        let deployed = app
            .report_from_pipeline(
                &ask,
                ReportedOutcome::Succeeded,
                Some("all instances healthy".into()),
                as_(&crew.deployer),
            )
            .await?;
        previous = Some((release_id, deployed.request.deployment_id));
    }
    let Some((release_id, deployment)) = previous else { return Ok(()) };
    let incident = ReleaseCommand::LinkIncident {
        release_id,
        incident: "INC-4711".into(),
        title: Some(format!("{name}: checkout errors after 2.5.0")),
        occurred_at: app.clock.now(),
    };
    app.release(&incident, as_(&crew.manager)).await?;
    emergency_roll_back(app, &crew, ci, &name, deployment).await
}

/// The demo's hooks, once: the second live application is the one tools deploy.
pub async fn hooks(app: &crate::app::App) -> Result<(), crate::app::AppError> {
    let target = {
        let graph = app.graph.read();
        if !graph.release_book().mappings().is_empty() {
            return Ok(());
        }
        let filter = cmdb_projections::graph::CiFilter {
            classes: Some(vec![cmdb_core::model::CiClass::Application]),
            statuses: Some(vec![cmdb_core::model::Status::Live]),
            ..Default::default()
        };
        let (apps, _) = graph.cis_at(graph.applied(), &filter, None, 2);
        apps.get(1).map(|c| (c.id, c.name.clone()))
    };
    match target {
        Some((ci, name)) => tooling_setup(app, ci, &name).await,
        None => Ok(()),
    }
}

/// The demo's deployment tooling: the principals GitHub's and Argo CD's deliveries act as
/// (deployers), and mapping rules from the repository `acme/<name>` and the Argo CD
/// application `<name>` to a live application CI, printed so a user can post to the hooks.
async fn tooling_setup(
    app: &crate::app::App,
    ci: cmdb_core::ids::CiId,
    name: &str,
) -> Result<(), crate::app::AppError> {
    use cmdb_core::access::{AccessCommand, PrincipalKind, Role};
    use cmdb_core::release::ReleaseCommand;
    use cmdb_core::release::observe::{MappingRule, Provider};

    if !app.access.snapshot().principals.contains_key(super::BOOTSTRAP_ADMIN) {
        tracing::warn!("no bootstrap admin: the demo sets up no hooks");
        return Ok(());
    }
    let admin = story_actor(super::BOOTSTRAP_ADMIN);
    for principal in ["github", "argocd"] {
        if app.access.snapshot().principals.contains_key(principal) {
            continue;
        }
        let create = AccessCommand::CreatePrincipal {
            name: principal.to_owned(),
            kind: PrincipalKind::System,
            display_name: Some(format!("{principal} deliveries (demo)")),
            roles: [Role::Deployer].into_iter().collect(),
        };
        app.access(&create, admin.clone()).await?;
    }
    let slug: String = name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let repository = format!("acme/{slug}");
    for (provider, source, subject) in
        [(Provider::Github, repository.clone(), None), (Provider::Cdevents, "/argocd".to_owned(), Some(slug.clone()))]
    {
        let rule = MappingRule { provider, source, subject, ci, environment: None };
        app.release(&ReleaseCommand::SetMapping(rule), admin.clone()).await?;
    }
    println!(
        "cmdb: demo hooks: GitHub repository {repository} and Argo CD application {slug} (source /argocd) map to CI {ci} ({name})"
    );
    Ok(())
}

/// Asks the gate for the story's run; while the change waits for approval, each principal of
/// the crew who may approve does, in turn. Whether the gate allowed in the end.
async fn gate_until_allowed(
    app: &crate::app::App,
    crew: &DemoCrew,
    ask: &crate::app::releases::GateAsk,
) -> Result<bool, crate::app::AppError> {
    let as_ = story_actor;
    // The policy may want one approver, two, or the service's owners: each principal of the
    // crew who may approve does, in turn, until the gate allows.
    let mut answer = app.gate(ask, false, as_(&crew.deployer)).await?;
    for approver in &crew.approvers {
        if answer.outcome.decision != cmdb_core::release::gate::GateDecision::Pending {
            break;
        }
        let Some(reference) =
            answer.outcome.change.as_deref().and_then(|n| n.parse::<crate::app::changes::ChangeRef>().ok())
        else {
            break;
        };
        let change = app.resolve_change(&reference).await?;
        // Whoever the policy does not count (segregation, roles) is refused; that is fine.
        if app.transition(change, cmdb_core::change::ChangeAction::Approve, None, None, as_(approver)).await.is_ok() {
            answer = app.gate(ask, false, as_(&crew.deployer)).await?;
        }
    }
    let allowed = answer.outcome.decision == cmdb_core::release::gate::GateDecision::Allow;
    if !allowed {
        tracing::warn!(?answer.outcome, "the demo's gate did not allow; the story stops here");
    }
    Ok(allowed)
}

/// A template for the application's pipeline changes, named by the application.
async fn pipeline_template(
    app: &crate::app::App,
    crew: &DemoCrew,
    ci: cmdb_core::ci::CiId,
) -> Result<(), crate::app::AppError> {
    let as_ = story_actor;
    let template = cmdb_core::ci::TemplateId(uuid::Uuid::now_v7());
    app.change(
        &cmdb_core::change::ChangeCommand::CreateTemplate {
            template_id: template,
            name: "pipeline deployment of an application".into(),
            title: "Deploy a new version of an application".into(),
            description: "A pipeline deploys a built, accepted artifact".into(),
            back_out_plan: "Redeploy the previous digest".into(),
            allowed_classes: vec![cmdb_core::model::CiClass::Application],
        },
        as_(&crew.manager),
    )
    .await?;
    let set = cmdb_core::release::PipelineTemplateSet { ci, template_id: Some(template) };
    app.release(&cmdb_core::release::ReleaseCommand::SetPipelineTemplate(set), as_(&crew.manager)).await?;

    Ok(())
}

/// The roll-back: an emergency change, approved by the emergency authority, then the
/// deployment rolled back under it, and the change completed.
async fn emergency_roll_back(
    app: &crate::app::App,
    crew: &DemoCrew,
    ci: cmdb_core::ci::CiId,
    name: &str,
    deployment: cmdb_core::ids::DeploymentId,
) -> Result<(), crate::app::AppError> {
    let as_ = story_actor;
    let emergency = cmdb_core::ci::ChangeId(uuid::Uuid::now_v7());
    let details = cmdb_core::change::ChangeDetails {
        title: format!("Roll back {name} 2.5.0"),
        description: Some("Checkout errors after 2.5.0 (INC-4711)".into()),
        justification: Some("Customer-facing errors".into()),
        back_out_plan: Some("Redeploy 2.5.0 once fixed".into()),
        window: None,
        implementer: Some(crew.deployer.clone()),
        scope: cmdb_core::change::Scope { cis: vec![ci], planned: Vec::new() },
        links: vec![cmdb_core::change::RecordLink {
            kind: cmdb_core::change::LinkKind::Incident,
            id: "INC-4711".into(),
        }],
    };
    let draft = cmdb_core::change::ChangeCommand::Draft {
        change_id: emergency,
        change_type: cmdb_core::change::ChangeType::Emergency,
        template_id: None,
        details,
    };
    app.change(&draft, as_(&crew.deployer)).await?;
    use cmdb_core::change::ChangeAction as C;
    app.transition(emergency, C::Submit, None, None, as_(&crew.deployer)).await?;
    app.transition(emergency, C::Approve, None, None, as_(&crew.emergency_approver)).await?;
    app.transition(emergency, C::Start, None, None, as_(&crew.deployer)).await?;
    app.roll_back(deployment, Some(emergency), "checkout errors (INC-4711)".into(), as_(&crew.deployer)).await?;
    app.transition(emergency, C::Complete, Some("2.4.0 is back".into()), None, as_(&crew.deployer)).await?;
    Ok(())
}

/// The principal a dashboard reads the demo as (a viewer), named in the README.
pub const DEMO_VIEWER: &str = "dashboard";

/// Changes in the coming weeks the story schedules: (days from now, hour of the day UTC).
const STORY_SCHEDULED: &[(i64, i64)] = &[(2, 19), (4, 20), (6, 21), (9, 19), (13, 20), (16, 21), (20, 2), (24, 19)];
/// Changes the story carries out now that fail and are backed out.
const STORY_FAILED: usize = 3;
/// Changes the story carries out now that succeed and are closed after their review.
const STORY_SUCCEEDED: usize = 4;

/// The demo's change story, once, through the application layer as real users would: a
/// viewer principal for dashboards; changes assessed from the impact graph, decided by the
/// approval policy and approved, scheduled in the coming weeks; changes carried out now, some
/// failed and backed out (CH-3), the others verified, reviewed (CH-7) and closed. With the
/// generated history's emergency and retrospective changes and overdue reviews, a dashboard
/// built on the demo has something to show.
pub async fn change_story(app: &crate::app::App) -> Result<(), crate::app::AppError> {
    use cmdb_core::access::{AccessCommand, PrincipalKind, Role};
    if app.access.snapshot().principals.contains_key(DEMO_VIEWER) {
        return Ok(());
    }
    let Some(crew) = demo_crew(app) else { return Ok(()) };
    let admin = story_actor(super::BOOTSTRAP_ADMIN);
    let create = AccessCommand::CreatePrincipal {
        name: DEMO_VIEWER.to_owned(),
        kind: PrincipalKind::System,
        display_name: Some("A dashboard reading the estate (demo)".into()),
        roles: [Role::Viewer].into_iter().collect(),
    };
    app.access(&create, admin).await?;
    let targets = story_targets(app, STORY_SCHEDULED.len() + STORY_FAILED + STORY_SUCCEEDED);
    let now = app.clock.now();
    let midnight = now.as_micros() - now.as_micros().rem_euclid(86_400_000_000);
    let at = |days: i64, hour: i64| cmdb_core::Timestamp::from_micros(midnight + (days * 24 + hour) * 3_600_000_000);
    let mut targets = targets.into_iter();
    for (days, hour) in STORY_SCHEDULED {
        let Some((ci, name)) = targets.next() else { return Ok(()) };
        let window = cmdb_core::change::Window {
            start: at(*days, *hour),
            end: at(*days, *hour + 2),
            time_zone: "Europe/Berlin".into(),
        };
        let title = format!("Patch {name} to the monthly baseline");
        if let Some(id) = approved_change(app, &crew, ci, &title, window).await? {
            // A freeze or a conflict may refuse the window: the change then stays approved.
            let _ = app.schedule(id, Some("in the agreed window".into()), story_actor(&crew.manager)).await;
        }
    }
    use cmdb_core::change::ChangeAction as C;
    for n in 0..STORY_FAILED + STORY_SUCCEEDED {
        let Some((ci, name)) = targets.next() else { return Ok(()) };
        let window = cmdb_core::change::Window { start: at(0, 0), end: at(1, 0), time_zone: "UTC".into() };
        let title = format!("Rotate {name}'s credentials");
        let Some(id) = approved_change(app, &crew, ci, &title, window).await? else { continue };
        app.schedule(id, Some("today".into()), story_actor(&crew.manager)).await?;
        let by = |who: &str| story_actor(who);
        app.transition(id, C::Start, None, None, by(&crew.deployer)).await?;
        if n < STORY_FAILED {
            app.transition(
                id,
                C::Fail,
                Some("the new credentials were refused by a client".into()),
                None,
                by(&crew.deployer),
            )
            .await?;
            app.transition(id, C::BackOut, Some("the previous credentials restored".into()), None, by(&crew.deployer))
                .await?;
        } else {
            app.transition(id, C::Complete, Some("rotated; clients reconnected".into()), None, by(&crew.deployer))
                .await?;
            app.transition(id, C::Verify, Some("checked every client".into()), None, by(&crew.manager)).await?;
            let review = cmdb_core::change::Review {
                objective_met: true,
                users_satisfied: true,
                side_effects: None,
                follow_up_actions: Vec::new(),
            };
            app.transition(id, C::Review, None, Some(review), by(&crew.manager)).await?;
            app.transition(id, C::Close, None, None, by(&crew.manager)).await?;
        }
    }
    Ok(())
}

/// Live CIs of several classes for the story's changes, `count` at most.
fn story_targets(app: &crate::app::App, count: usize) -> Vec<(cmdb_core::ci::CiId, String)> {
    use cmdb_core::model::{CiClass, Status};
    let graph = app.graph.read();
    let mut found = Vec::new();
    for class in [CiClass::Database, CiClass::Application, CiClass::VirtualMachine, CiClass::Host] {
        let filter = cmdb_projections::graph::CiFilter {
            classes: Some(vec![class]),
            statuses: Some(vec![Status::Live]),
            ..Default::default()
        };
        // Skip the first applications: the release story and the hooks use them.
        let (cis, _) = graph.cis_at(graph.applied(), &filter, None, count + 2);
        found.extend(cis.iter().skip(2).take(count.div_ceil(4)).map(|c| (c.id, c.name.to_string())));
    }
    found.truncate(count);
    found
}

/// A normal change on `ci` drafted and submitted by the deployer, assessed by the manager
/// (facts from the graph, the policy's decision), approved by the crew's approvers in turn
/// until the decision is met. `None` if the policy wants approvals the crew cannot give.
async fn approved_change(
    app: &crate::app::App,
    crew: &DemoCrew,
    ci: cmdb_core::ci::CiId,
    title: &str,
    window: cmdb_core::change::Window,
) -> Result<Option<cmdb_core::ci::ChangeId>, crate::app::AppError> {
    use cmdb_core::change::ChangeAction as C;
    let id = cmdb_core::ci::ChangeId(uuid::Uuid::now_v7());
    let details = cmdb_core::change::ChangeDetails {
        title: title.to_owned(),
        description: Some(format!("{title}, as the runbook says")),
        justification: Some("keeps the estate supported and secure".into()),
        back_out_plan: Some("restore the snapshot taken before the window".into()),
        window: Some(window),
        implementer: Some(crew.deployer.clone()),
        scope: cmdb_core::change::Scope { cis: vec![ci], planned: Vec::new() },
        links: Vec::new(),
    };
    let draft = cmdb_core::change::ChangeCommand::Draft {
        change_id: id,
        change_type: cmdb_core::change::ChangeType::Normal,
        template_id: None,
        details,
    };
    app.change(&draft, story_actor(&crew.deployer)).await?;
    app.transition(id, C::Submit, None, None, story_actor(&crew.deployer)).await?;
    app.transition(id, C::Assess, Some("assessed from the impact graph".into()), None, story_actor(&crew.manager))
        .await?;
    for approver in &crew.approvers {
        // Whoever the policy does not count (segregation, roles) is refused; that is fine.
        let _ = app.transition(id, C::Approve, Some("looks right".into()), None, story_actor(approver)).await;
        let state = app.graph.read().change_book().change_at(id, u64::MAX).map(|c| c.state);
        if state == Some(cmdb_core::change::ChangeState::Approved) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn story_actor(who: &str) -> cmdb_core::Metadata {
    cmdb_core::Metadata::new(cmdb_core::Actor { principal: who.into(), token_id: None }, cmdb_core::Source::System)
        .with_correlation_id("demo-release-story")
}

/// Who plays which part in the story: principals of the generated crew.
struct DemoCrew {
    manager: String,
    approvers: Vec<String>,
    emergency_approver: String,
    deployer: String,
}

fn demo_crew(app: &crate::app::App) -> Option<DemoCrew> {
    use cmdb_core::access::Role;
    let access = app.access.snapshot();
    let with = |role: Role| {
        access
            .principals
            .values()
            .find(|p| p.roles.contains(&role) && !p.roles.contains(&Role::Admin))
            .map(|p| p.name.clone())
    };
    Some(DemoCrew {
        manager: with(Role::ChangeManager)?,
        approvers: {
            let mut all: Vec<String> = access
                .principals
                .values()
                .filter(|p| p.roles.contains(&Role::Approver))
                .map(|p| p.name.clone())
                .collect();
            all.extend(
                access
                    .principals
                    .values()
                    .filter(|p| !p.roles.contains(&Role::Approver) && !p.roles.contains(&Role::Admin))
                    .map(|p| p.name.clone()),
            );
            if all.is_empty() {
                return None;
            }
            all
        },
        emergency_approver: with(Role::EmergencyApprover)?,
        deployer: with(Role::Deployer)?,
    })
}
