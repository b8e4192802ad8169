//! Binds each request to its workflow: the task, the affinity key Envoy's ring hash pins on,
//! and (legacy era) the sealed session. Enforces the binding's lifetime on every request.
//!
//! State lives in proxy-wasm shared data (every worker of one Envoy sees it) through [`Host`]:
//! use records of tasks and sessions in the bounded bucket table of [`table`], and
//! `mcpgw:revocations`.

use std::borrow::Cow;
use std::rc::Rc;

use crate::agreement::{Era, H_SESSION_ID};
use crate::cache::Memo;
use crate::config::AFFINITY_HEADER;
use crate::host::Host;
use crate::identity::Caller;
use crate::session::table::{self, RecordId};
use crate::session::{self, Binding, Expected, Limits, Revocations, SealKeys, SessionError, TaskError, Usage, NONCE_LEN};
use crate::text::push_decimal;
use crate::verdict::Refusal;

pub const REVOCATIONS_KEY: &str = "mcpgw:revocations";
/// Rewritten, empty, after every change of the revocation table and at configuration: its
/// shared-data version tells a worker whether the table changed. Reading an empty value copies
/// nothing into the VM, where reading the table itself would copy all of it (up to 3 x 1024
/// entries) and call into the VM to allocate, on every request.
pub const REVOCATIONS_EPOCH_KEY: &str = "mcpgw:revocations:epoch";
/// Rewritten, empty, after every `DELETE` of a legacy session, as the revocation epoch is after
/// a revocation: a worker that used a session within this second skips reading its use record
/// only while this version stands, so a session ended on another worker is refused at once.
pub const SESSIONS_ENDED_EPOCH_KEY: &str = "mcpgw:sessions:ended:epoch";

/// Keys for sealing session handles and for keyed hashes (affinity, session tags).
pub struct WorkflowKeys {
    pub seal: SealKeys,
    /// Stable across seal-key rotation and shared by replicas, so affinity and tags stay put.
    pub hash: [u8; 32],
    /// What this worker already computed with these keys: a warm request's costliest steps are
    /// the task's keyed hash, and opening and tagging its session handle.
    task_slots: Memo<Rc<TaskSlot>>,
    opened_handles: Memo<Rc<Opened>>,
    /// The shared revocation table as last decoded: a table of thousands of entries is read and
    /// decoded once per change, not once per request.
    revocations: std::cell::RefCell<Decoded>,
}

/// The revocation table as a worker last decoded it, with the versions it was read under.
#[derive(Default)]
struct Decoded {
    epoch: u32,
    version: u32,
    table: Rc<Revocations>,
}

/// A task's affinity key and where its use record lives, all derived from (subject, backend,
/// task) under the hash key.
struct TaskSlot {
    affinity: Rc<str>,
    place: Place,
    /// The use record as this worker last read or wrote it.
    seen: std::cell::Cell<Option<Usage>>,
}

/// A session handle opened: what it sealed, and its tag.
struct Opened {
    binding: Binding,
    tag: String,
    place: Place,
    /// The use record as this worker last read or wrote it, with the ended-sessions epoch it
    /// was read under.
    seen: std::cell::Cell<Option<(Usage, u32)>>,
}

/// Entries per memo and worker (an opened handle takes about 600 bytes).
const MEMO_ENTRIES: usize = 4096;

impl WorkflowKeys {
    pub fn new(seal: SealKeys, hash: [u8; 32]) -> WorkflowKeys {
        WorkflowKeys {
            seal,
            hash,
            task_slots: Memo::new(MEMO_ENTRIES),
            opened_handles: Memo::new(MEMO_ENTRIES),
            revocations: Default::default(),
        }
    }

    fn task_slot(&self, sub: &str, backend: &str, task: &str) -> Rc<TaskSlot> {
        // Length prefixes keep the memo key unambiguous, as in the hash input.
        let mut key = String::with_capacity(sub.len() + backend.len() + task.len() + 8);
        for part in [sub, backend] {
            push_decimal(&mut key, part.len() as u64);
            key.push(':');
            key.push_str(part);
        }
        key.push_str(task);
        self.task_slots.get_or(&key, || {
            let affinity = session::affinity_for_task(&self.hash, sub, backend, task);
            Rc::new(TaskSlot { place: Place::of(&affinity, TASK), affinity: affinity.into(), seen: Default::default() })
        })
    }

    /// The revocation table every worker shares; `None` when unreadable (callers fail closed).
    /// Envoy's version of a shared-data value changes with every write, so an unchanged epoch
    /// means an unchanged table; without an epoch (none announced yet) the table's own version
    /// decides, at the cost of reading it.
    fn revocations(&self, host: &dyn Host) -> Option<Rc<Revocations>> {
        let epoch = epoch(host, REVOCATIONS_EPOCH_KEY);
        let mut cached = self.revocations.borrow_mut();
        if epoch != 0 && cached.epoch == epoch {
            return Some(cached.table.clone());
        }
        let (bytes, version) = host.shared_get(REVOCATIONS_KEY);
        let table = match bytes {
            None => Rc::new(Revocations::default()),
            Some(_) if version != 0 && cached.version == version => cached.table.clone(),
            Some(bytes) => Rc::new(Revocations::decode(&bytes).ok()?),
        };
        *cached = Decoded { epoch, version, table: table.clone() };
        Some(table)
    }

    /// Opens a handle; the memo is keyed by the whole handle, so only that very handle hits.
    fn open(&self, handle: &str) -> Result<Rc<Opened>, SessionError> {
        self.opened_handles.get_or_try(handle, || {
            let binding = session::open(&self.seal, handle)?;
            let tag = session::session_tag(&self.hash, handle);
            Ok(Rc::new(Opened { binding, place: Place::of(&tag, SESSION), tag, seen: Default::default() }))
        })
    }
}

/// Stores a new revocation table if the stored one is still at version `cas`, then announces
/// the change to every worker (see [`REVOCATIONS_EPOCH_KEY`]).
pub fn store_revocations(host: &dyn Host, table: &Revocations, cas: u32) -> bool {
    host.shared_set(REVOCATIONS_KEY, &table.encode(), Some(cas)) && announce_revocations(host)
}

/// Moves the revocation epoch on, so every worker reads the table again once. The gateway does
/// this at configuration too: a table stored before then is read, and from then on every
/// request needs only the epoch.
pub fn announce_revocations(host: &dyn Host) -> bool {
    move_epoch(host, REVOCATIONS_EPOCH_KEY)
}

/// The version of an epoch key ([`REVOCATIONS_EPOCH_KEY`], [`SESSIONS_ENDED_EPOCH_KEY`]): its
/// value is empty, so reading it copies nothing into the VM.
fn epoch(host: &dyn Host, key: &str) -> u32 {
    host.shared_get(key).1
}

/// Rewrites an epoch key, empty: Envoy gives every write a new version.
fn move_epoch(host: &dyn Host, key: &str) -> bool {
    host.shared_set(key, b"", None)
}

/// Settings the binding decisions need.
pub struct WorkflowConfig<'a> {
    pub keys: &'a WorkflowKeys,
    pub sessions: &'a Limits,
    pub tasks: &'a Limits,
    pub policy_version: u32,
}

/// The request's facts that binding needs.
pub struct Ask<'a> {
    pub caller: &'a Caller,
    pub backend: &'a str,
    pub era: Era,
    /// JSON-RPC method, or the HTTP method for GET/DELETE.
    pub method: &'a str,
    pub task_header: Option<&'a str>,
    pub session_header: Option<&'a str>,
}

/// What must happen to the upstream's `Mcp-Session-Id` on the way back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OnResponse {
    /// No session: an upstream session id is removed (the backend's id never reaches clients).
    #[default]
    Strip,
    /// `initialize`: seal the upstream's new id into a handle for the client.
    Seal(Box<Binding>),
    /// A live session: show the client its handle again.
    Handle(String),
}

/// The binding decided for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bound {
    pub task: String,
    /// Header edits for upstream (affinity, restored session id).
    pub set: Vec<(&'static str, Rc<str>)>,
    /// Minted tokens must not outlive this (end of the session or task).
    pub not_after: Option<u64>,
    /// Audit `session`: the handle's tag, never the handle.
    pub session_tag: String,
    pub on_response: OnResponse,
}

/// Decides task, affinity and session for a request, or refuses it.
pub fn bind(cfg: &WorkflowConfig<'_>, host: &dyn Host, ask: &Ask<'_>) -> Result<Bound, Refusal> {
    let explicit_task = ask.caller.declared_task(ask.task_header);
    let now = host.now();
    match ask.era {
        Era::Legacy if ask.method == "initialize" => {
            // The upstream id does not exist yet, so the affinity is chosen here; hashing on the
            // session id would send initialize and later requests to different replicas.
            let task = explicit_task.map_or_else(|| host.random_id(), str::to_string);
            let affinity = session::new_affinity(host.random16());
            let expires_at = now + cfg.sessions.absolute_secs;
            let binding = Binding {
                upstream_session: String::new(),
                affinity: affinity.clone(),
                sub: ask.caller.sub.to_string(),
                task: task.clone(),
                backend: ask.backend.to_string(),
                issued_at: now,
                expires_at,
                policy_version: cfg.policy_version,
            };
            Ok(Bound {
                task,
                set: vec![(AFFINITY_HEADER, affinity.as_str().into())],
                not_after: Some(expires_at),
                session_tag: String::new(),
                on_response: OnResponse::Seal(Box::new(binding)),
            })
        }
        Era::Legacy => match ask.session_header {
            Some(handle) => restore_session(cfg, host, ask, handle, explicit_task),
            None => Ok(Bound { task: explicit_task.map_or_else(|| host.random_id(), str::to_string), ..Bound::default() }),
        },
        Era::Modern => match explicit_task {
            Some(task) => bind_task(cfg, host, ask, task),
            // A stateless request without a task needs no binding.
            None => Ok(Bound { task: host.random_id(), ..Bound::default() }),
        },
    }
}

/// Use-record kinds: the first part of their buckets' shared-data keys.
const TASK: &str = "task";
const SESSION: &str = "sess";

/// Where a use record lives: its id in the bounded shared table, and its bucket's key.
#[derive(Clone)]
struct Place {
    id: RecordId,
    bucket: String,
}

impl Place {
    /// The place of the record named `name` (a task affinity, a session tag) of one kind.
    fn of(name: &str, kind: &str) -> Place {
        let id = RecordId::of(name);
        Place { id, bucket: id.bucket_key(kind) }
    }
}

/// A use record in the bounded shared table: read, then (if changed) written back.
struct Record<'a> {
    place: Cow<'a, Place>,
    limits: &'a Limits,
}

impl Record<'_> {
    fn read(&self, host: &dyn Host) -> Option<Usage> {
        table::find(&host.shared_get(&self.place.bucket).0.unwrap_or_default(), &self.place.id)
    }

    /// The record, read unless `seen` (this worker's last view of it) is from this very second:
    /// a task or session used within it cannot be idle and its first use never changes, so a
    /// busy one skips the shared read. Callers check revocation either way.
    fn current(&self, host: &dyn Host, seen: Option<Usage>, now: u64) -> Option<Usage> {
        match seen.filter(|u| u.last == now) {
            Some(seen) => Some(seen),
            None => self.read(host),
        }
    }

    /// Writes `usage` with compare-and-swap, so two workers updating one bucket lose nothing.
    fn write(&self, host: &dyn Host, usage: Usage, now: u64) {
        let Place { id, bucket: key } = &*self.place;
        for _ in 0..4 {
            let (bucket, cas) = host.shared_get(key);
            let bucket = bucket.unwrap_or_default();
            let merged = table::find(&bucket, id).map_or(usage, |other| usage.merge(other));
            if host.shared_set(key, &table::upsert(&bucket, id, merged, now, self.limits), Some(cas)) {
                return;
            }
        }
    }
}

fn restore_session(cfg: &WorkflowConfig<'_>, host: &dyn Host, ask: &Ask<'_>, handle: &str, task: Option<&str>) -> Result<Bound, Refusal> {
    let opened = cfg.keys.open(handle).map_err(Refusal::Session)?;
    let (binding, tag) = (&opened.binding, opened.tag.clone());
    let record = Record { place: Cow::Borrowed(&opened.place), limits: cfg.sessions };
    let now = host.now();
    // Within the second, only a `DELETE` on another worker could have changed the record, and
    // every `DELETE` moves the ended-sessions epoch: this worker's view counts only under the
    // epoch it was taken under.
    let ended_epoch = epoch(host, SESSIONS_ENDED_EPOCH_KEY);
    let seen = opened.seen.get().filter(|(_, at)| *at == ended_epoch).map(|(u, _)| u);
    let usage = record.current(host, seen, now);
    let revocations = cfg.keys.revocations(host).ok_or(Refusal::Session(SessionError::Revoked))?;
    let expected = Expected { sub: &ask.caller.sub, backend: ask.backend, task, policy_version: cfg.policy_version };
    let updated = session::check_session(binding, &tag, &expected, now, usage, cfg.sessions, &revocations)
        .map_err(Refusal::Session)?;
    let ending = ask.method == "DELETE";
    let updated = if ending { updated.ended_at(now) } else { updated };
    if usage != Some(updated) {
        record.write(host, updated, now);
    }
    if ending {
        // After the record: a worker that sees the new epoch reads the ended record.
        move_epoch(host, SESSIONS_ENDED_EPOCH_KEY);
    }
    // An ended record refuses by itself, whichever epoch it is kept under.
    opened.seen.set(Some((updated, ended_epoch)));
    let not_after = binding.expires_at.min(binding.issued_at + cfg.sessions.absolute_secs);
    Ok(Bound {
        task: binding.task.clone(),
        set: vec![(H_SESSION_ID, binding.upstream_session.as_str().into()), (AFFINITY_HEADER, binding.affinity.as_str().into())],
        not_after: Some(not_after),
        session_tag: tag,
        on_response: OnResponse::Handle(handle.to_string()),
    })
}

fn bind_task(cfg: &WorkflowConfig<'_>, host: &dyn Host, ask: &Ask<'_>, task: &str) -> Result<Bound, Refusal> {
    let slot = cfg.keys.task_slot(&ask.caller.sub, ask.backend, task);
    let record = Record { place: Cow::Borrowed(&slot.place), limits: cfg.tasks };
    let now = host.now();
    let usage = record.current(host, slot.seen.get(), now);
    let revocations = cfg.keys.revocations(host).ok_or(Refusal::Task(TaskError::Revoked))?;
    let updated = session::check_task(usage, now, cfg.tasks, &revocations, &ask.caller.sub, task).map_err(Refusal::Task)?;
    // Time is in seconds: most calls of a busy task change nothing, and skip the write.
    if usage != Some(updated) {
        record.write(host, updated, now);
    }
    slot.seen.set(Some(updated));
    let not_after = (updated.first + cfg.tasks.absolute_secs).min(updated.last + cfg.tasks.idle_secs);
    Ok(Bound { task: task.to_string(), set: vec![(AFFINITY_HEADER, slot.affinity.clone())], not_after: Some(not_after), ..Bound::default() })
}

/// The `Mcp-Session-Id` value to show the client, given what the upstream answered.
pub fn on_response(cfg: &WorkflowConfig<'_>, host: &dyn Host, plan: &OnResponse, upstream: Option<&str>) -> Option<String> {
    let upstream = upstream?;
    match plan {
        OnResponse::Strip => None,
        OnResponse::Handle(handle) => Some(handle.clone()),
        OnResponse::Seal(binding) => {
            if !session::valid_upstream_session_id(upstream) {
                return None;
            }
            let binding = Binding { upstream_session: upstream.to_string(), ..(**binding).clone() };
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..16].copy_from_slice(&host.random16());
            nonce[16..].copy_from_slice(&host.random16()[..NONCE_LEN - 16]);
            let handle = session::seal(&cfg.keys.seal, &binding, nonce).ok()?;
            let tag = session::session_tag(&cfg.keys.hash, &handle);
            let record = Record { place: Cow::Owned(Place::of(&tag, SESSION)), limits: cfg.sessions };
            record.write(host, Usage::new(binding.issued_at), binding.issued_at);
            Some(handle)
        }
    }
}
