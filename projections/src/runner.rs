//! The projection runner: follows the log from a checkpoint, applies events in position
//! order in batches, publishes how far it got, and saves checkpoints.
//!
//! A checkpoint file holds a JSON header line (`projection`, `format_version`, `position`, the
//! `hash` of the event at that position) and then the projection state in postcard (binary;
//! values that need a self-describing format are embedded as JSON text). It is written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, on its own
//! task every `checkpoint_interval_ms`, never inside the apply loop. On start a checkpoint
//! whose format, position or hash does not match the log (after a restore, say, or a
//! rewritten log) is discarded and the projection is rebuilt from the start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use cmdb_core::store::subscribe;
use cmdb_core::{ChainLink, EventStore, FoldRecord, Hash};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::graph::{GraphError, TemporalGraph};

/// A read model the runner can drive.
pub trait Projection: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Its name: the checkpoint file's name and the label in metrics and `/readyz`.
    const NAME: &'static str;
    /// Bumped whenever the state's shape changes; older checkpoints are then rebuilt.
    const FORMAT_VERSION: u32;
    /// Folds one event.
    fn apply(&mut self, record: &FoldRecord) -> Result<(), String>;
    /// What applying needs from the payload alone, computed without the state (in parallel).
    type Decoded: Send + 'static;
    /// Decodes an event off the folding thread (the pipelined rebuild).
    fn decode(record: &FoldRecord) -> Result<Self::Decoded, String>;
    /// Folds an event decoded by [`Projection::decode`].
    fn apply_decoded(&mut self, record: &FoldRecord, decoded: Self::Decoded) -> Result<(), String>;
    /// The last position applied.
    fn position(&self) -> u64;
    /// The hash of the event at that position (genesis before any).
    fn position_hash(&self) -> Hash;
    /// Rebuilds what a checkpoint leaves out (caches derived from the state), after loading.
    fn restored(&mut self) {}
    /// Called before a catch-up folds up to `events` more events: a state may make room for
    /// them at once rather than grow (and copy) its per-event arrays by doubling.
    fn expect_events(&mut self, _events: u64) {}
    /// Called once the state has caught up with the log, before it serves (and again after a
    /// rebuild): where a state builds the indexes that are worth keeping up event by event
    /// only once the bulk of the log is folded.
    fn caught_up(&mut self) {}
    /// Whether a redaction record makes the runner rebuild the state from the log, so that no
    /// erased value stays in it (or in its next checkpoint). Off for states that hold no
    /// payload value (the Merkle tree: hashes survive a redaction unchanged).
    const REBUILD_ON_REDACTION: bool = true;
    /// Whether a catch-up may hand this projection the log's [`ChainLink`]s (position, stream,
    /// type, hash: a quarter of the reading of whole records) through
    /// [`apply_link`](Self::apply_link), reading whole only the records
    /// [`needs_record`](Self::needs_record) names. For states built from the hash chain alone.
    const CATCHES_UP_FROM_LINKS: bool = false;
    /// With links: whether the record behind `link` must be read whole.
    fn needs_record(_link: &ChainLink) -> bool {
        true
    }
    /// With links: folds a record known by its link alone.
    fn apply_link(&mut self, link: &ChainLink) -> Result<(), String> {
        Err(format!("{} folds whole records only (position {})", Self::NAME, link.position))
    }
}

/// Whether `record` is a redaction record (its payloads were erased from the log).
fn is_redaction(record: &FoldRecord) -> bool {
    record.event_type == cmdb_core::chain::REDACTION_APPLIED
}

impl Projection for TemporalGraph {
    const NAME: &'static str = "graph";
    const FORMAT_VERSION: u32 = 13;

    fn apply(&mut self, record: &FoldRecord) -> Result<(), String> {
        TemporalGraph::apply(self, record).map_err(|e: GraphError| e.to_string())
    }

    type Decoded = Option<cmdb_core::ci::CiEvent>;

    fn decode(record: &FoldRecord) -> Result<Self::Decoded, String> {
        TemporalGraph::decode(record).map_err(|e| e.to_string())
    }

    fn apply_decoded(&mut self, record: &FoldRecord, decoded: Self::Decoded) -> Result<(), String> {
        TemporalGraph::apply_decoded(self, record, decoded).map_err(|e| e.to_string())
    }

    fn position(&self) -> u64 {
        self.applied()
    }

    fn position_hash(&self) -> Hash {
        self.applied_hash()
    }

    fn caught_up(&mut self) {
        self.build_head_hops();
    }

    fn expect_events(&mut self, events: u64) {
        self.reserve_for_events(events);
    }

    fn restored(&mut self) {
        self.rebuild_derived();
        self.change_book_mut().restore_current();
        self.rebuild_report_nodes();
        self.release_book_mut().restore_current();
    }
}

/// Pages waiting between two stages of a catch-up (read -> decode -> apply).
const CATCH_UP_PAGES_IN_FLIGHT: usize = 2;

/// Readers of a catch-up's pages, each on its own connection reading every
/// `CATCH_UP_READERS`th page: reading is the longest stage (issue 15, part 6: ~1 us per record
/// in SQLite and the row's decoding), and one reader alone left the other core idle while the
/// fold waited for it.
const CATCH_UP_READERS: usize = 2;

/// Settings of a runner.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Where checkpoints live; `None` keeps none (tests, tools).
    pub checkpoint_dir: Option<PathBuf>,
    /// How often to save a checkpoint when the projection moved.
    pub checkpoint_interval_ms: u64,
    /// Most events applied under one write lock.
    pub max_batch_events: usize,
    /// Events read from the log per page (within the store's `max_page_events`).
    pub page_events: usize,
}

/// Events per page by default: the SQLite store's most. A catch-up of the large estate in
/// pages of 10,000 kept the two cores busier (1.90 against 1.84) and took 3.10-3.20 s
/// against 3.24-3.26 s in pages of 5,000 (issue 15, part 6).
pub const DEFAULT_PAGE_EVENTS: usize = 10_000;

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            checkpoint_dir: None,
            checkpoint_interval_ms: 30_000,
            max_batch_events: 1000,
            page_events: DEFAULT_PAGE_EVENTS,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    projection: String,
    format_version: u32,
    position: u64,
    hash: Hash,
}

/// Why a projection could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    /// Passed on as it is.
    Store(#[from] cmdb_core::StoreError),
    #[error("projection {projection} could not apply the log: {detail}")]
    /// Projection … could not apply the log: ….
    Apply {
        /// Which projection.
        projection: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// A running projection: a shared state, how far it got, and why it stopped if it did.
pub struct ProjectionHandle<P> {
    state: Arc<RwLock<P>>,
    applied: watch::Receiver<u64>,
    failure: Arc<Mutex<Option<String>>>,
    /// How the state was obtained at start: from a checkpoint, or rebuilt (and why).
    pub started_from: String,
}

impl<P> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            state: self.state.clone(),
            applied: self.applied.clone(),
            failure: self.failure.clone(),
            started_from: self.started_from.clone(),
        }
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// Read access to the state. Hold it for one answer, not across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, P> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Why the projection stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// A receiver that wakes whenever the projection applies more of the log.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        let mut applied = self.applied.clone();
        applied.mark_unchanged();
        applied
    }

    /// Waits until the projection has applied `position`; false on timeout or failure.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(timeout, applied.wait_for(|p| *p >= position)).await.is_ok_and(|r| r.is_ok())
    }
}

fn checkpoint_path<P: Projection>(dir: &Path) -> PathBuf {
    dir.join(format!("{}.checkpoint", P::NAME))
}

/// Reads a checkpoint and checks it against the log. `Err` says why it was not used.
async fn load_checkpoint<P: Projection>(store: &dyn EventStore, dir: &Path) -> Result<P, String> {
    let path = checkpoint_path::<P>(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err("no checkpoint".into()),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or("no header line")?;
    let header: CheckpointHeader = serde_json::from_slice(&bytes[..newline]).map_err(|e| format!("bad header: {e}"))?;
    if header.projection != P::NAME || header.format_version != P::FORMAT_VERSION {
        return Err(format!(
            "format {} {} is not this build's {} {}",
            header.projection,
            header.format_version,
            P::NAME,
            P::FORMAT_VERSION
        ));
    }
    if header.position > 0 {
        let event = store.event_at(header.position).await.map_err(|e| e.to_string())?;
        match event {
            None => return Err(format!("position {} is not in the log (a restore to an older log?)", header.position)),
            Some(event) if event.hash != header.hash => {
                return Err(format!("the log's event at {} has another hash (the log was replaced)", header.position));
            }
            Some(_) => {}
        }
    }
    let mut state: P = postcard::from_bytes(&bytes[newline + 1..]).map_err(|e| format!("bad state: {e}"))?;
    if state.position() != header.position {
        return Err("the state's position does not match its header".into());
    }
    state.restored();
    Ok(state)
}

fn write_checkpoint<P: Projection>(dir: &Path, state: &P, hash: Hash) -> std::io::Result<()> {
    debug_assert_eq!(hash, state.position_hash());
    std::fs::create_dir_all(dir)?;
    let header = CheckpointHeader {
        projection: P::NAME.to_owned(),
        format_version: P::FORMAT_VERSION,
        position: state.position(),
        hash,
    };
    let path = checkpoint_path::<P>(dir);
    let temporary = path.with_extension("checkpoint.tmp");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        serde_json::to_writer(&mut file, &header)?;
        file.write_all(b"\n")?;
        postcard::to_io(state, &mut file).map_err(std::io::Error::other)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Starts a projection: from a valid checkpoint or from scratch, caught up with the log when
/// this returns, then following it.
pub async fn start<P: Projection>(
    store: Arc<dyn EventStore>,
    options: RunnerOptions,
) -> Result<ProjectionHandle<P>, RunnerError> {
    let (state, started_from) = initial_state::<P>(store.as_ref(), &options).await;
    start_from(store, state, started_from, options).await
}

/// Starts two projections, `A` folding whole records and `B` any: like [`start`] for each,
/// but when both start at the same position (a rebuild of both, or checkpoints saved
/// together) the log is read and parsed once, and each page `A` has applied goes on to `B`
/// (issue 15, part 6: the server rebuilds the graph and the evidence tree on the same two
/// cores). From different positions each reads from its own, so neither waits for the other.
pub async fn start_pair<A: Projection, B: Projection>(
    store: Arc<dyn EventStore>,
    options: RunnerOptions,
) -> Result<(ProjectionHandle<A>, ProjectionHandle<B>), RunnerError> {
    let ((a, a_from), (b, b_from)) =
        tokio::join!(initial_state::<A>(store.as_ref(), &options), initial_state::<B>(store.as_ref(), &options));
    if a.position() != b.position() || A::CATCHES_UP_FROM_LINKS {
        return tokio::try_join!(
            start_from(store.clone(), a, a_from, options.clone()),
            start_from(store.clone(), b, b_from, options.clone()),
        );
    }
    let head = store.head().await?.position;
    let page = catch_up_page_events(store.as_ref(), &options);
    let from_checkpoint = a.position() > 0;
    let (pages_for_b, b_pages) = tokio::sync::mpsc::channel(CATCH_UP_PAGES_IN_FLIGHT);
    let b_fold = tokio::spawn(fold_pages(b, b_pages));
    let a_caught_up = catch_up_records(store.clone(), a, head, page, Some(pages_for_b)).await;
    let b_caught_up = b_fold.await.map_err(|e| RunnerError::Apply { projection: B::NAME, detail: e.to_string() })?;
    let (a, a_from) = after_redaction(&store, a_caught_up?, from_checkpoint, a_from, head, page).await?;
    let (b, b_from) = after_redaction(&store, b_caught_up?, from_checkpoint, b_from, head, page).await?;
    debug_assert_eq!(a.position(), b.position(), "read from one position to one head");
    Ok((launch(&store, a, a_from, &options), launch(&store, b, b_from, &options)))
}

/// Events per page of a catch-up: the setting, within the store's page limit.
fn catch_up_page_events(store: &dyn EventStore, options: &RunnerOptions) -> usize {
    options.page_events.clamp(1, store.limits().max_page_events)
}

/// The state a projection starts from: its checkpoint if one is valid, else empty (and why).
async fn initial_state<P: Projection>(store: &dyn EventStore, options: &RunnerOptions) -> (P, String) {
    match &options.checkpoint_dir {
        None => (P::default(), "rebuilt: checkpoints are off".to_owned()),
        Some(dir) => match load_checkpoint::<P>(store, dir).await {
            Ok(state) => {
                let position = state.position();
                (state, format!("checkpoint at position {position}"))
            }
            Err(reason) => {
                tracing::info!(projection = P::NAME, %reason, "rebuilding the projection from the log");
                (P::default(), format!("rebuilt: {reason}"))
            }
        },
    }
}

/// Catches `state` up with the log, then launches it.
async fn start_from<P: Projection>(
    store: Arc<dyn EventStore>,
    state: P,
    started_from: String,
    options: RunnerOptions,
) -> Result<ProjectionHandle<P>, RunnerError> {
    // Catch up before serving.
    let head = store.head().await?.position;
    let page = catch_up_page_events(store.as_ref(), &options);
    let from_checkpoint = state.position() > 0;
    let caught_up = catch_up(store.clone(), state, head, page).await?;
    let (state, started_from) = after_redaction(&store, caught_up, from_checkpoint, started_from, head, page).await?;
    Ok(launch(&store, state, started_from, &options))
}

/// A redaction after the checkpoint means the checkpoint may hold erased values: the state
/// caught up from it is replaced by one rebuilt from the start.
async fn after_redaction<P: Projection>(
    store: &Arc<dyn EventStore>,
    (state, saw_redaction): (P, bool),
    from_checkpoint: bool,
    started_from: String,
    head: u64,
    page: usize,
) -> Result<(P, String), RunnerError> {
    if !(saw_redaction && from_checkpoint && P::REBUILD_ON_REDACTION) {
        return Ok((state, started_from));
    }
    tracing::info!(projection = P::NAME, "a redaction follows the checkpoint; rebuilding from the log");
    let rebuilt = catch_up(store.clone(), P::default(), head, page).await?.0;
    Ok((rebuilt, "rebuilt: a redaction follows the checkpoint".to_owned()))
}

/// Builds the head's indexes of a caught-up state, then follows the log (and checkpoints).
fn launch<P: Projection>(
    store: &Arc<dyn EventStore>,
    mut state: P,
    started_from: String,
    options: &RunnerOptions,
) -> ProjectionHandle<P> {
    let indexing = std::time::Instant::now();
    state.caught_up();
    tracing::info!(projection = P::NAME, ms = indexing.elapsed().as_millis() as u64, "indexes of the head built");
    let (applied_sender, applied) = watch::channel(state.position());
    let state = Arc::new(RwLock::new(state));
    let failure = Arc::new(Mutex::new(None));
    let handle = ProjectionHandle { state: state.clone(), applied, failure: failure.clone(), started_from };
    tokio::spawn(follow(store.clone(), state.clone(), applied_sender, failure.clone(), options.clone()));
    if let Some(dir) = options.checkpoint_dir.clone() {
        tokio::spawn(checkpoint_loop(handle.clone(), dir, options.checkpoint_interval_ms));
    }
    handle
}

/// `B`'s half of a shared catch-up: folds the pages another projection has applied, in
/// order, each on the blocking pool (then frees it there). Says whether a redaction record
/// was among them.
async fn fold_pages<B: Projection>(
    mut state: B,
    mut pages: tokio::sync::mpsc::Receiver<Vec<FoldRecord>>,
) -> Result<(B, bool), RunnerError> {
    let mut saw_redaction = false;
    while let Some(records) = pages.recv().await {
        let folded = tokio::task::spawn_blocking(move || {
            let mut saw = false;
            for record in &records {
                debug_assert!(record.position > state.position(), "the pair starts from one position");
                saw |= is_redaction(record);
                let decoded = B::decode(record)?;
                state.apply_decoded(record, decoded)?;
            }
            drop(records);
            Ok::<_, String>((state, saw))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|folded| folded);
        let (next, saw) = folded.map_err(|detail| RunnerError::Apply { projection: B::NAME, detail })?;
        state = next;
        saw_redaction |= saw;
    }
    Ok((state, saw_redaction))
}

/// Applies the log from `state`'s position up to `head` (not past it) in three stages that
/// overlap: reading pages ([`CATCH_UP_READERS`] of the store's readers), decoding their
/// payloads (the blocking pool) and applying them here, in order. Two cores run all three at once; a
/// bounded channel of [`CATCH_UP_PAGES_IN_FLIGHT`] pages between stages keeps memory bounded.
/// Says whether a redaction record was among the events applied.
async fn catch_up<P: Projection>(
    store: Arc<dyn EventStore>,
    state: P,
    head: u64,
    page: usize,
) -> Result<(P, bool), RunnerError> {
    if P::CATCHES_UP_FROM_LINKS {
        return catch_up_from_links(store, state, head, page).await;
    }
    catch_up_records(store, state, head, page, None).await
}

/// [`catch_up`] from whole records; each page applied goes on to `next` if given (another
/// projection's fold), else is freed on the blocking pool.
async fn catch_up_records<P: Projection>(
    store: Arc<dyn EventStore>,
    mut state: P,
    head: u64,
    page: usize,
    next: Option<tokio::sync::mpsc::Sender<Vec<FoldRecord>>>,
) -> Result<(P, bool), RunnerError> {
    state.expect_events(head.saturating_sub(state.position()));
    type Page = Result<Vec<FoldRecord>, String>;
    // A page's records stay where the store put them: decoding writes the payloads beside
    // them, so no record (256 bytes each, plus its payload) is moved between stages.
    type DecodedPage<D> = Result<(Vec<FoldRecord>, Vec<D>), String>;
    let (read_pages, mut to_decode) = tokio::sync::mpsc::channel::<Page>(CATCH_UP_PAGES_IN_FLIGHT);
    let (decoded_pages, mut to_apply) = tokio::sync::mpsc::channel::<DecodedPage<P::Decoded>>(CATCH_UP_PAGES_IN_FLIGHT);
    let read = move |after| {
        let store = store.clone();
        async move { store.read_fold(after, page).await }
    };
    let reader =
        spawn_page_readers(state.position(), head, page, read, |record: &FoldRecord| record.position, read_pages);
    let decoder = tokio::spawn(async move {
        while let Some(records) = to_decode.recv().await {
            let decoded = match records {
                Ok(records) => tokio::task::spawn_blocking(move || {
                    let decoded = records.iter().map(P::decode).collect::<Result<Vec<_>, String>>()?;
                    Ok((records, decoded))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
                Err(error) => Err(error),
            };
            if decoded_pages.send(decoded).await.is_err() {
                return;
            }
        }
    });
    let mut saw_redaction = false;
    while let Some(batch) = to_apply.recv().await {
        let (records, decoded) = batch.map_err(|detail| RunnerError::Apply { projection: P::NAME, detail })?;
        debug_assert_eq!(records.len(), decoded.len(), "one decoded payload per record");
        for (record, decoded) in records.iter().zip(decoded) {
            saw_redaction |= is_redaction(record);
            state
                .apply_decoded(record, decoded)
                .map_err(|detail| RunnerError::Apply { projection: P::NAME, detail })?;
        }
        match &next {
            // If the next fold stopped, its error is the one to report: this one carries on.
            Some(next) => {
                let _ = next.send(records).await;
            }
            // Freeing a page of records is real work: leave it to another core.
            None => {
                tokio::task::spawn_blocking(move || drop(records));
            }
        }
    }
    let _ = reader.await;
    let _ = decoder.await;
    Ok((state, saw_redaction))
}

/// Reads the log's pages after `after` up to `head` (not past it) into `pages`, in order, until
/// `head` is read or the receiver is gone; a failed read is sent as the last page. The first
/// stage of both catch-ups (`read` gives whole records or links).
///
/// [`CATCH_UP_READERS`] readers read at once: page `k` holds the positions after
/// `after + k * page_events` up to the next page's start, and reader `i` reads the pages
/// `k = i (mod CATCH_UP_READERS)`, in order, into a channel of its own. Taking one page from
/// each channel in turn gives the pages in the log's order. A page holds every position of its
/// range even if the log had gaps: its read asks for `page_events` records after its start,
/// and the range holds at most that many.
fn spawn_page_readers<T, F, Fut>(
    after: u64,
    head: u64,
    page_events: usize,
    read: F,
    position: fn(&T) -> u64,
    pages: tokio::sync::mpsc::Sender<Result<Vec<T>, String>>,
) -> tokio::task::JoinHandle<()>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<T>, cmdb_core::StoreError>> + Send + 'static,
{
    let page_span = u64::try_from(page_events.max(1)).unwrap_or(u64::MAX);
    let mut readers: Vec<_> = (0..CATCH_UP_READERS)
        .map(|reader| {
            let (sender, receiver) = tokio::sync::mpsc::channel(CATCH_UP_PAGES_IN_FLIGHT);
            let read = read.clone();
            tokio::spawn(async move {
                for (start, end) in page_ranges(after, head, page_span, reader) {
                    let page = read(start).await.map(|mut page| {
                        page.retain(|item| position(item) <= end);
                        page
                    });
                    let failed = page.is_err();
                    if sender.send(page.map_err(|error| error.to_string())).await.is_err() || failed {
                        return;
                    }
                }
            });
            receiver
        })
        .collect();
    tokio::spawn(async move {
        for turn in (0..CATCH_UP_READERS).cycle() {
            let Some(page) = readers[turn].recv().await else { return };
            let failed = page.is_err();
            if pages.send(page).await.is_err() || failed {
                return;
            }
        }
    })
}

/// The position ranges `(start, end]` of one of [`spawn_page_readers`]' readers: the pages
/// `reader`, `reader + CATCH_UP_READERS`, ... of `page_span` positions each after `after`, up
/// to `head`.
fn page_ranges(after: u64, head: u64, page_span: u64, reader: usize) -> impl Iterator<Item = (u64, u64)> {
    (reader as u64..)
        .step_by(CATCH_UP_READERS)
        .map(move |page| after.saturating_add(page.saturating_mul(page_span)))
        .take_while(move |&start| start < head)
        .map(move |start| (start, start.saturating_add(page_span).min(head)))
}

/// The catch-up of a projection built from the hash chain: pages of links read ahead of the
/// fold (one page in flight), the few records it needs whole read one at a time and checked
/// against their link.
async fn catch_up_from_links<P: Projection>(
    store: Arc<dyn EventStore>,
    mut state: P,
    head: u64,
    page: usize,
) -> Result<(P, bool), RunnerError> {
    let apply_error = |detail: String| RunnerError::Apply { projection: P::NAME, detail };
    let (read_pages, mut to_apply) =
        tokio::sync::mpsc::channel::<Result<Vec<ChainLink>, String>>(CATCH_UP_PAGES_IN_FLIGHT);
    let reader_store = store.clone();
    let read = move |after| {
        let store = reader_store.clone();
        async move { store.read_links(after, page).await }
    };
    let reader = spawn_page_readers(state.position(), head, page, read, |link: &ChainLink| link.position, read_pages);
    let mut saw_redaction = false;
    while let Some(links) = to_apply.recv().await {
        for link in links.map_err(apply_error)? {
            saw_redaction |= link.event_type == cmdb_core::chain::REDACTION_APPLIED;
            if !P::needs_record(&link) {
                state.apply_link(&link).map_err(apply_error)?;
                continue;
            }
            let record = store.event_at(link.position).await?.filter(|record| record.hash == link.hash);
            let record = record.ok_or_else(|| {
                apply_error(format!("position {} changed between reading its link and its record", link.position))
            })?;
            let decoded = P::decode(&record).map_err(apply_error)?;
            state.apply_decoded(&record, decoded).map_err(apply_error)?;
        }
    }
    let _ = reader.await;
    Ok((state, saw_redaction))
}

async fn follow<P: Projection>(
    store: Arc<dyn EventStore>,
    state: Arc<RwLock<P>>,
    applied: watch::Sender<u64>,
    failure: Arc<Mutex<Option<String>>>,
    options: RunnerOptions,
) {
    let from = *applied.borrow();
    let mut events = subscribe(store.clone(), from, options.page_events).ready_chunks(options.max_batch_events.max(1));
    while let Some(batch) = events.next().await {
        let mut last = None;
        let mut saw_redaction = false;
        let mut outcome = {
            let mut state = state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut outcome = Ok(());
            for next in batch {
                match next {
                    Ok(record) => {
                        if let Err(detail) = state.apply(&record) {
                            outcome = Err(detail);
                            break;
                        }
                        saw_redaction |= is_redaction(&record);
                        last = Some(record.position);
                    }
                    Err(error) => {
                        outcome = Err(error.to_string());
                        break;
                    }
                }
            }
            outcome
        };
        if let (true, true, Some(position), Ok(())) = (P::REBUILD_ON_REDACTION, saw_redaction, last, &outcome) {
            // Rebuilt off the lock (reads go on from the old state meanwhile); published
            // before `applied` moves, so a caller waiting for the redaction's position reads
            // the rebuilt state.
            let page = catch_up_page_events(store.as_ref(), &options);
            match catch_up(store.clone(), P::default(), position, page).await {
                Ok((mut rebuilt, _)) => {
                    rebuilt.caught_up();
                    *state.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = rebuilt;
                }
                Err(error) => outcome = Err(format!("rebuilding after a redaction: {error}")),
            }
        }
        if let Some(position) = last {
            applied.send_replace(position);
        }
        if let Err(detail) = outcome {
            tracing::error!(projection = P::NAME, %detail, "the projection stopped");
            if let Ok(mut slot) = failure.lock() {
                *slot = Some(detail);
            }
            return;
        }
    }
}

async fn checkpoint_loop<P: Projection>(handle: ProjectionHandle<P>, dir: PathBuf, interval_ms: u64) {
    let mut saved = u64::MAX;
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = save_checkpoint(&handle, &dir, &mut saved).await {
            tracing::warn!(projection = P::NAME, %error, "checkpoint failed; will retry");
        }
        if handle.failure().is_some() {
            return;
        }
    }
}

/// Saves a checkpoint now if the projection moved since `saved`.
pub async fn save_checkpoint<P: Projection>(
    handle: &ProjectionHandle<P>,
    dir: &Path,
    saved: &mut u64,
) -> Result<(), String> {
    if handle.applied() == *saved {
        return Ok(());
    }
    let state = handle.state.clone();
    let dir = dir.to_path_buf();
    let position = tokio::task::spawn_blocking(move || {
        let state = state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        write_checkpoint(&dir, &*state, state.position_hash()).map(|_| state.position())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    *saved = position;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `log` (positions, ascending, maybe with gaps) through the page readers: every
    /// page received in order, and whether the last was a failure. A read starting at
    /// `fail_at` fails.
    async fn read_through(
        log: &[u64],
        after: u64,
        head: u64,
        page_events: usize,
        fail_at: Option<u64>,
    ) -> (Vec<u64>, bool) {
        let log: Arc<Vec<u64>> = Arc::new(log.to_vec());
        let read = move |start: u64| {
            let log = log.clone();
            async move {
                if Some(start) == fail_at {
                    return Err(cmdb_core::StoreError::Storage(format!("no read at {start}")));
                }
                Ok(log.iter().copied().filter(|&p| p > start).take(page_events).collect::<Vec<u64>>())
            }
        };
        let (sender, mut pages) = tokio::sync::mpsc::channel(1);
        let merger = spawn_page_readers(after, head, page_events, read, |p: &u64| *p, sender);
        let (mut read_positions, mut failed) = (Vec::new(), false);
        while let Some(page) = pages.recv().await {
            match page {
                Ok(page) => read_positions.extend(page),
                Err(_) => failed = true,
            }
        }
        merger.await.expect("the merger ends");
        (read_positions, failed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_page_readers_give_the_log_in_order_up_to_the_head() {
        let gapless: Vec<u64> = (1..=50).collect();
        for page_events in [1, 2, 3, 7, 50, 100] {
            for after in [0, 1, 13] {
                for head in [after, after + 1, 37, 50] {
                    let expected: Vec<u64> = gapless.iter().copied().filter(|&p| p > after && p <= head).collect();
                    let (read, failed) = read_through(&gapless, after, head, page_events, None).await;
                    assert_eq!(read, expected, "pages of {page_events} after {after} to {head}");
                    assert!(!failed);
                }
            }
        }
        // Gaps (not written by this store, but a page must still hold its whole range).
        let gappy = [1, 2, 3, 5, 6, 9, 10, 11, 12, 13, 20];
        let (read, _) = read_through(&gappy, 0, 20, 3, None).await;
        assert_eq!(read, gappy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_is_the_last_page_and_nothing_after_it_is_sent() {
        let log: Vec<u64> = (1..=30).collect();
        // Pages of 4: the read starting after 12 is the fourth page (a second reader's).
        let (read, failed) = read_through(&log, 0, 30, 4, Some(12)).await;
        assert!(failed, "the failure reaches the fold");
        assert_eq!(read, (1..=12).collect::<Vec<u64>>(), "the pages before it, in order, and none after");
    }
}
