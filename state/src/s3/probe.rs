//! The conditional-write probe: before the first conditional write of a process, prove that
//! the store enforces `If-None-Match: *` and `If-Match` (the cluster lock depends on it).

use super::*;

/// What [`S3Store::verify_conditional_writes`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// Both `If-None-Match: *` and `If-Match` were enforced.
    Honoured,
    /// At least one was ignored; only returned (with a warning) when the unsafe override is set.
    Ignored {
        /// `If-None-Match: *` let a second create through.
        if_none_match_ignored: bool,
        /// `If-Match` with a wrong ETag let a write through.
        if_match_ignored: bool,
    },
}

/// Probe results per endpoint and bucket: "once per process", and one probe at a time so 16
/// racing first writers do not probe 16 times.
static PROBES: LazyLock<AsyncMutex<HashMap<String, ConditionalWrites>>> =
    LazyLock::new(|| AsyncMutex::new(HashMap::new()));

impl S3Store {
    pub(super) async fn ensure_conditional_writes(&self) -> StateResult<()> {
        if self.verified.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.verify_conditional_writes().await.map(|_| ())
    }

    /// Check (once per process and endpoint/bucket) that the store enforces `If-None-Match: *`
    /// and `If-Match`, by writing and then deleting a probe object under
    /// `PREFIX/.kprov-probe/`. A store that ignores them yields [`StateError::Backend`]
    /// explaining that locking is unsafe, unless the unsafe override is set, in which case it
    /// warns and returns [`ConditionalWrites::Ignored`].
    ///
    /// The store calls this itself before its first conditional write, so the cluster lease is
    /// protected without callers doing anything.
    pub async fn verify_conditional_writes(&self) -> StateResult<ConditionalWrites> {
        self.check_bucket().await?;
        let result = {
            let mut cache = PROBES.lock().await;
            let id = format!("{}|{}", self.endpoint, self.bucket);
            match cache.get(&id) {
                Some(r) => *r,
                None => {
                    let r = self.probe().await?;
                    cache.insert(id, r);
                    r
                }
            }
        };
        let ConditionalWrites::Ignored {
            if_none_match_ignored,
            if_match_ignored,
        } = result
        else {
            self.verified.store(true, Ordering::SeqCst);
            return Ok(result);
        };
        let what = match (if_none_match_ignored, if_match_ignored) {
            (true, true) => "both If-None-Match: * and If-Match",
            (true, false) => "If-None-Match: *",
            _ => "If-Match",
        };
        let problem = format!(
            "the S3 store at {} ignores conditional writes ({what}: a probe write that had to fail went through), so \
             kprov's cluster lock and compare-and-swap are unsafe: two kprov runs could overwrite each other's state",
            self.endpoint
        );
        if self.unsafe_no_conditional_writes {
            if !self.verified.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "{problem}. Going on because {UNSAFE_NO_CONDITIONAL_WRITES_FLAG} / \
                     {UNSAFE_NO_CONDITIONAL_WRITES_ENV}=1 is set: make sure only one kprov runs against {} at a time",
                    self.url()
                );
            }
            return Ok(result);
        }
        Err(StateError::Backend {
            location: self.url(),
            message: format!(
                "{problem}. Use a store that supports conditional writes (AWS S3 does), or, if you are sure only one \
                 kprov ever runs against this store at a time, pass {UNSAFE_NO_CONDITIONAL_WRITES_FLAG} or set \
                 {UNSAFE_NO_CONDITIONAL_WRITES_ENV}=1"
            ),
        })
    }

    pub(super) async fn probe(&self) -> StateResult<ConditionalWrites> {
        let full = format!(
            "{}{PROBE_DIR}/{:016x}{:016x}",
            self.prefix,
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let name = full.strip_prefix(&self.prefix).unwrap_or(&full).to_string();
        let outcome = async {
            self.write(
                &full,
                &name,
                b"kprov conditional-write probe: create",
                &Condition::IfAbsent,
                false,
            )
            .await?;
            let if_none_match_ignored = match self
                .write(
                    &full,
                    &name,
                    b"kprov conditional-write probe: second create",
                    &Condition::IfAbsent,
                    false,
                )
                .await
            {
                Ok(_) => true,
                Err(StateError::Conflict { .. }) => false,
                Err(e) => return Err(e),
            };
            // A version no store can have produced for the probe's bodies.
            let wrong = Version("\"00000000000000000000000000000000\"".into());
            let if_match_ignored = match self
                .write(
                    &full,
                    &name,
                    b"kprov conditional-write probe: stale update",
                    &Condition::IfVersion(wrong),
                    false,
                )
                .await
            {
                Ok(_) => true,
                Err(StateError::Conflict { .. }) => false,
                Err(e) => return Err(e),
            };
            Ok(if if_none_match_ignored || if_match_ignored {
                ConditionalWrites::Ignored {
                    if_none_match_ignored,
                    if_match_ignored,
                }
            } else {
                ConditionalWrites::Honoured
            })
        }
        .await;
        // Clean up whatever happened; a leftover probe object is harmless (hidden from list).
        if let Err(e) = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            tracing::debug!(
                "could not delete probe object {full}: {}",
                DisplayErrorContext(&e)
            );
        }
        outcome
    }
}
