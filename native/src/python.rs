//! The Python binding: `consumer_native.FastPath(spec)`, its `process_lines` and `process_chunk`.
//!
//! `spec` is the plain-data form of `consumer.rules.Rules` built by
//! consumer/fastpath.py.  No panic crosses into Python: each line runs under
//! `catch_unwind`, and a line that panicked is declined like any other.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::engine::{Fields, Output, Scratch, Source, ROLES};
use crate::tables::{
    CodeEntry, FastMap, Kind, Limits, Names, PhraseIndex, Rule, Tables, Vocabulary,
};
use crate::text::Unicode;

/// Bumped whenever the `spec` layout or the `process_lines` contract changes, so that
/// consumer/fastpath.py never drives a stale build.  2: `process_record` (the worker).
const INTERFACE: u32 = 2;

static PANICS: AtomicU64 = AtomicU64::new(0);

fn item<'py, T: FromPyObjectOwned<'py>>(spec: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    match spec.get_item(key)? {
        Some(value) => value.extract::<T>().map_err(|err| {
            let err: PyErr = err.into();
            PyValueError::new_err(format!("spec[{key:?}]: {err}"))
        }),
        None => Err(PyValueError::new_err(format!("spec has no {key:?}"))),
    }
}

type RuleRow = (
    String,
    String,
    Option<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    bool,
    bool,
);
type IndexRow = (Option<String>, String, u32);

fn index(rows: Vec<IndexRow>) -> PyResult<PhraseIndex> {
    PhraseIndex::new(rows).map_err(PyValueError::new_err)
}

fn build(spec: &Bound<'_, PyDict>) -> PyResult<Tables> {
    let mut names = Names::default();
    let rule_rows: Vec<RuleRow> = item(spec, "rules")?;
    let rules = rule_rows
        .into_iter()
        .map(
            |(id, state, retrying, all, unless, codes, providers, permanent, held)| Rule {
                id,
                state: names.get(&state),
                retrying: retrying.map(|s| names.get(&s)),
                all: all.into_iter().map(String::into_bytes).collect(),
                unless: unless.into_iter().map(String::into_bytes).collect(),
                codes,
                providers,
                permanent,
                held,
            },
        )
        .collect::<Vec<_>>();
    for rule in &rules {
        if !rule
            .all
            .iter()
            .chain(&rule.unless)
            .all(|n| crate::tables::is_needle(n))
        {
            return Err(PyValueError::new_err(format!(
                "rule {}: a needle is not a space and a word",
                rule.id
            )));
        }
    }
    let rule_index = index(item(spec, "rule_index")?)?;
    if rule_index.size > rules.len() {
        return Err(PyValueError::new_err(
            "rule_index refers to a rule that does not exist",
        ));
    }
    let mut codes = |key: &str| -> PyResult<FastMap<String, CodeEntry>> {
        let rows: Vec<(String, String, String)> = item(spec, key)?;
        Ok(rows
            .into_iter()
            .map(|(code, final_state, retrying)| {
                (
                    code,
                    CodeEntry {
                        final_state: names.get(&final_state),
                        retrying: names.get(&retrying),
                    },
                )
            })
            .collect())
    };
    let enhanced = codes("enhanced")?;
    let reply = codes("reply")?;
    let vocabulary_words: std::collections::HashMap<String, String> = item(spec, "vocabulary")?;
    let mut word = |key: &str| -> PyResult<u16> {
        vocabulary_words
            .get(key)
            .map(|w| names.get(w))
            .ok_or_else(|| PyValueError::new_err(format!("vocabulary has no {key:?}")))
    };
    let vocabulary = Vocabulary {
        delivered: word("delivered")?,
        deferred: word("deferred")?,
        bounce: word("bounce")?,
        by_provider: word("by_provider")?,
        by_rule: word("by_rule")?,
        by_enhanced: word("by_enhanced")?,
        by_reply: word("by_reply")?,
        by_fallback: word("by_fallback")?,
        auto_reply: word("auto_reply")?,
        undetermined: word("undetermined")?,
        unhandled: word("unhandled")?,
        suppress: word("suppress")?,
        other: word("other")?,
    };
    let final_rows: Vec<(String, String)> = item(spec, "final_status")?;
    let temporary_rows: Vec<(String, String)> = item(spec, "temporary")?;
    let firm_rows: Vec<String> = item(spec, "firm")?;
    let final_pairs: Vec<(u16, u16)> = final_rows
        .iter()
        .map(|(s, t)| (names.get(s), names.get(t)))
        .collect();
    let temporary_pairs: Vec<(u16, u16)> = temporary_rows
        .iter()
        .map(|(s, t)| (names.get(s), names.get(t)))
        .collect();
    let firm_names: Vec<u16> = firm_rows.iter().map(|s| names.get(s)).collect();
    let size = names.words.len();
    let mut final_status = vec![None; size];
    for (state, status) in final_pairs {
        final_status[state as usize] = Some(status);
    }
    let mut temporary = vec![None; size];
    for (state, other) in temporary_pairs {
        temporary[state as usize] = Some(other);
    }
    let mut firm = vec![false; size];
    for state in firm_names {
        firm[state as usize] = true;
    }
    let actions: Vec<(String, String)> = item(spec, "actions")?;
    let actions = actions
        .into_iter()
        .map(|(action, kind)| {
            let kind = match kind.as_str() {
                "delivered" => Kind::Delivered,
                "deferred" => Kind::Deferred,
                "failed" => Kind::Failed,
                other => return Err(PyValueError::new_err(format!("unknown kind {other:?}"))),
            };
            Ok((action, kind))
        })
        .collect::<PyResult<FastMap<_, _>>>()?;
    let keys: Vec<String> = item(spec, "keys")?;
    if keys.len() != ROLES.len() {
        return Err(PyValueError::new_err(format!(
            "keys: expected {} names",
            ROLES.len()
        )));
    }
    let limits: std::collections::HashMap<String, i64> = item(spec, "limits")?;
    let limit = |key: &str| -> PyResult<i64> {
        limits
            .get(key)
            .copied()
            .ok_or_else(|| PyValueError::new_err(format!("limits has no {key:?}")))
    };
    let limits = Limits {
        match_chars: limit("match_chars")? as usize,
        scan_chars: limit("scan_chars")? as usize,
        text_chars: limit("text_chars")? as usize,
        ident_chars: limit("ident_chars")? as usize,
        email_chars: limit("email_chars")? as usize,
        min_ts: limit("min_ts")?,
        max_ts: limit("max_ts")?,
        line_bytes: limit("line_bytes")? as usize,
    };
    if limits.scan_chars > limits.match_chars {
        return Err(PyValueError::new_err(
            "scan_chars must not exceed match_chars",
        ));
    }
    let token_groups: Vec<String> = item(spec, "mailbox_token_groups")?;
    let mailbox_tokens = index(item(spec, "mailbox_token_index")?)?;
    if mailbox_tokens.size > token_groups.len() {
        return Err(PyValueError::new_err(
            "mailbox_token_index refers to a missing group",
        ));
    }
    let unicode_spec: Bound<'_, PyDict> = item(spec, "unicode")?;
    let first: u32 = item(&unicode_spec, "first")?;
    let lower: String = item(&unicode_spec, "lower")?;
    let no_lower: Vec<u32> = item(&unicode_spec, "no_lower")?;
    let code: String = item(&unicode_spec, "code")?;
    let unicode = Unicode::new(first, &lower, &no_lower, &code).map_err(PyValueError::new_err)?;
    let domains: Vec<(String, String)> = item(spec, "mailbox_domains")?;
    let hosts: Vec<(String, String)> = item(spec, "mailbox_hosts")?;
    Ok(Tables {
        names: names.words,
        rules,
        rule_index,
        enhanced,
        reply,
        final_status,
        temporary,
        firm,
        policy_version: item(spec, "policy_version")?,
        mailbox_domains: domains.into_iter().collect(),
        mailbox_hosts: hosts.into_iter().collect(),
        mailbox_tokens,
        mailbox_token_groups: token_groups,
        vocabulary,
        actions,
        keys,
        provider: item(spec, "provider")?,
        schema_version: item(spec, "schema_version")?,
        limits,
        unicode,
    })
}

/// Buffers kept from batch to batch on each thread: fresh multi-megabyte buffers for
/// every batch cost more in page faults than the copying does.
#[derive(Default)]
struct Buffers {
    scratch: Scratch,
    events: Vec<u8>,
    updates: Vec<u8>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::new(Buffers::default());
}

/// Run the engine over a batch without the GIL and hand the results, with the buffers
/// holding them, to `finish` (which runs with the GIL again).  `outputs[i]` is `None`
/// for a declined line.  With `newlines`, each output is followed by `\n`.
fn run_batch<'py, T>(
    py: Python<'py>,
    tables: &Tables,
    lines: &Bound<'py, PyList>,
    received_at: &str,
    max_bytes: usize,
    newlines: bool,
    finish: impl FnOnce(&[Option<Output>], &[u8], &[u8]) -> PyResult<T>,
) -> PyResult<T> {
    let items: Vec<Option<Bound<'py, PyBytes>>> = lines
        .iter()
        .map(|line| line.cast_into::<PyBytes>().ok())
        .collect();
    let slices: Vec<Option<&[u8]>> = items
        .iter()
        .map(|b| b.as_ref().map(|b| b.as_bytes()))
        .collect();
    BUFFERS.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return Err(PyValueError::new_err(
                "process_lines re-entered on one thread",
            ));
        };
        let buffers = &mut *guard;
        buffers.events.clear();
        buffers.updates.clear();
        let outputs: Vec<Option<Output>> = py.detach(|| {
            let batch = tables.batch(received_at, max_bytes);
            let Buffers {
                scratch,
                events,
                updates,
            } = buffers;
            slices
                .iter()
                .map(|line| {
                    let line = (*line)?;
                    let marks = (events.len(), updates.len());
                    let run = || tables.process(line, &batch, scratch, events, updates);
                    match catch_unwind(AssertUnwindSafe(run)) {
                        Ok(Some(output)) => {
                            if newlines {
                                events.push(b'\n');
                                if output.suppression.is_some() {
                                    updates.push(b'\n');
                                }
                            }
                            Some(output)
                        }
                        Ok(None) => None,
                        Err(_) => {
                            PANICS.fetch_add(1, Ordering::Relaxed);
                            *scratch = Scratch::default();
                            events.truncate(marks.0);
                            updates.truncate(marks.1);
                            None
                        }
                    }
                })
                .collect()
        });
        let result = finish(&outputs, &buffers.events, &buffers.updates);
        // Do not keep a huge buffer after an unusual batch.
        for buffer in [&mut buffers.events, &mut buffers.updates] {
            if buffer.capacity() > 64 << 20 {
                *buffer = Vec::new();
            }
        }
        result
    })
}

/// `Fields` as Python objects, in the order `process_record` documents (after the two
/// JSON documents).
fn field_objects<'py>(py: Python<'py>, fields: &Fields<'_>) -> Vec<Bound<'py, PyAny>> {
    let text = |value: &str| PyString::new(py, value).into_any();
    let maybe = |value: Option<&str>| match value {
        Some(value) => PyString::new(py, value).into_any(),
        None => py.None().into_bound(py),
    };
    vec![
        text(fields.event_id),
        text(fields.provider_event_id),
        text(fields.occurred_at),
        text(fields.email),
        text(fields.domain),
        text(fields.mailbox_provider),
        maybe(fields.message_id),
        text(fields.status),
        maybe(fields.recipient_state),
        text(fields.provider_state),
        match fields.smtp_code {
            Some(code) => code
                .into_pyobject(py)
                .map_or_else(|e| match e {}, Bound::into_any),
            None => py.None().into_bound(py),
        },
        maybe(fields.enhanced_code),
        maybe(fields.diagnostic),
        maybe(fields.remote_mta),
        text(fields.classified_by),
        maybe(fields.rule_id),
        match fields.needs_review {
            Some(flag) => PyBool::new(py, flag).to_owned().into_any(),
            None => py.None().into_bound(py),
        },
    ]
}

/// The compiled classifier for one set of rule tables.
#[pyclass(frozen, module = "consumer_native")]
struct FastPath {
    tables: Tables,
}

#[pymethods]
impl FastPath {
    #[new]
    fn new(spec: &Bound<'_, PyDict>) -> PyResult<Self> {
        Ok(FastPath {
            tables: build(spec)?,
        })
    }

    /// `(events, updates, declined)` for a batch of lines.  `events` and `updates` have
    /// one item per line, in order: `events[i]` is the normalized event of line `i` (JSON
    /// bytes, as `orjson.dumps(event.to_json())` gives it) and `updates[i]` its
    /// suppression update, each `None` when there is none; `declined` lists, ascending,
    /// the indices of the lines it did not classify, which the caller must run through
    /// the Python path (`events[i]` is `None` for exactly those).  `received_at` stands
    /// in for a missing event time; a line over `max_bytes` is declined (Python makes
    /// the dead letter).  Items that are not `bytes` are declined.  Runs without the GIL.
    ///
    /// Flat lists rather than a tuple per line: tuples are tracked by Python's garbage
    /// collector, and 100 000 of them a second set off collections.  `declined` lets a
    /// caller copy the runs between declined lines with slices, no Python per line.
    fn process_lines<'py>(
        &self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        received_at: &str,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        run_batch(
            py,
            &self.tables,
            lines,
            received_at,
            max_bytes,
            false,
            |outputs, events, updates| {
                let event_list = PyList::empty(py);
                let update_list = PyList::empty(py);
                let declined = PyList::empty(py);
                for (index, output) in outputs.iter().enumerate() {
                    match output {
                        None => {
                            event_list.append(py.None())?;
                            update_list.append(py.None())?;
                            declined.append(index)?;
                        }
                        Some(Output { event, suppression }) => {
                            event_list.append(PyBytes::new(py, &events[event.clone()]))?;
                            match suppression {
                                Some(update) => update_list
                                    .append(PyBytes::new(py, &updates[update.clone()]))?,
                                None => update_list.append(py.None())?,
                            }
                        }
                    }
                }
                PyTuple::new(py, [event_list, update_list, declined])
            },
        )
    }

    /// The same work as `process_lines`, shaped for writing JSON Lines:
    /// `(events, updates, declined, event_cuts, update_cuts)`.  `events` is every
    /// classified line's event followed by `\n`, in order, as one `bytes`; `updates`
    /// likewise for the suppression updates; `declined` the indices of the declined
    /// lines, and `event_cuts[k]` / `update_cuts[k]` the offsets in `events` / `updates`
    /// where the outputs of declined line `declined[k]` belong.  A caller writes the
    /// slices between cuts and the Python path's outputs at the cuts: a few Python
    /// operations per batch instead of per line.
    fn process_chunk<'py>(
        &self,
        py: Python<'py>,
        lines: &Bound<'py, PyList>,
        received_at: &str,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        run_batch(
            py,
            &self.tables,
            lines,
            received_at,
            max_bytes,
            true,
            |outputs, events, updates| {
                let declined = PyList::empty(py);
                let event_cuts = PyList::empty(py);
                let update_cuts = PyList::empty(py);
                // Where the outputs of line i start: just after those of the line before.
                let (mut event_at, mut update_at) = (0, 0);
                for (index, output) in outputs.iter().enumerate() {
                    match output {
                        None => {
                            declined.append(index)?;
                            event_cuts.append(event_at)?;
                            update_cuts.append(update_at)?;
                        }
                        Some(Output { event, suppression }) => {
                            event_at = event.end + 1;
                            if let Some(update) = suppression {
                                update_at = update.end + 1;
                            }
                        }
                    }
                }
                let events = PyBytes::new(py, events).into_any();
                let updates = PyBytes::new(py, updates).into_any();
                PyTuple::new(
                    py,
                    [
                        events,
                        updates,
                        declined.into_any(),
                        event_cuts.into_any(),
                        update_cuts.into_any(),
                    ],
                )
            },
        )
    }

    /// One Kafka record for the worker (consumer/app.py `ClassifyStage`): `None` when
    /// declined (the caller runs the Python path), else the tuple `(event, update,
    /// event_id, provider_event_id, occurred_at, email, domain, mailbox_provider,
    /// message_id, status, recipient_state, provider_state, smtp_code, enhanced_code,
    /// diagnostic, remote_mta, classified_by, rule_id, needs_review)`: the two JSON
    /// documents as `process_lines` gives them but with the record's `source`
    /// (`{"topic", "partition", "offset"}`) in both, then the event's values (and the
    /// update's `needs_review`, `None` when there is no update), so the caller builds
    /// its keys and metrics labels without parsing JSON back.  `received_at` is the
    /// record's own time.  A value that is not `bytes`, a topic that is not a `str` and
    /// a partition or offset beyond 64 bits are declined.  Keeps the GIL: one record
    /// is a few microseconds, less than releasing and taking it back would save.
    #[allow(clippy::too_many_arguments)]
    fn process_record<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
        received_at: &str,
        topic: &Bound<'py, PyAny>,
        partition: &Bound<'py, PyAny>,
        offset: &Bound<'py, PyAny>,
        max_bytes: usize,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Ok(value) = value.cast::<PyBytes>() else {
            return Ok(None);
        };
        let Ok(topic) = topic.cast::<PyString>() else {
            return Ok(None);
        };
        let Ok(topic) = topic.to_str() else {
            return Ok(None);
        };
        let (Ok(partition), Ok(offset)) = (partition.extract::<i64>(), offset.extract::<i64>())
        else {
            return Ok(None);
        };
        let line = value.as_bytes();
        let tables = &self.tables;
        let mut batch = tables.batch(received_at, max_bytes);
        batch.source = Some(Source {
            topic,
            partition,
            offset,
        });
        BUFFERS.with(|cell| {
            let Ok(mut guard) = cell.try_borrow_mut() else {
                return Err(PyValueError::new_err(
                    "process_record re-entered on one thread",
                ));
            };
            let Buffers {
                scratch,
                events,
                updates,
            } = &mut *guard;
            events.clear();
            updates.clear();
            let mut values: Option<Vec<Bound<'py, PyAny>>> = None;
            let mut keep = |fields: &Fields<'_>| values = Some(field_objects(py, fields));
            let run =
                || tables.process_detailed(line, &batch, scratch, events, updates, Some(&mut keep));
            let output = match catch_unwind(AssertUnwindSafe(run)) {
                Ok(output) => output,
                Err(_) => {
                    PANICS.fetch_add(1, Ordering::Relaxed);
                    *scratch = Scratch::default();
                    None
                }
            };
            let (Some(Output { event, suppression }), Some(values)) = (output, values) else {
                return Ok(None);
            };
            let mut items = Vec::with_capacity(values.len() + 2);
            items.push(PyBytes::new(py, &events[event]).into_any());
            items.push(match suppression {
                Some(update) => PyBytes::new(py, &updates[update]).into_any(),
                None => py.None().into_bound(py),
            });
            items.extend(values);
            PyTuple::new(py, items).map(Some)
        })
    }

    /// Benchmarking aid: seconds the engine alone takes for `repeat` passes over
    /// `lines` (no Python objects built), to tell its cost from the binding's.
    fn engine_seconds(
        &self,
        lines: &Bound<'_, PyList>,
        received_at: &str,
        max_bytes: usize,
        repeat: usize,
    ) -> f64 {
        let items: Vec<Bound<'_, PyBytes>> = lines
            .iter()
            .filter_map(|line| line.cast_into::<PyBytes>().ok())
            .collect();
        let batch = self.tables.batch(received_at, max_bytes);
        let mut scratch = Scratch::default();
        let (mut events, mut updates) = (Vec::new(), Vec::new());
        let start = std::time::Instant::now();
        for _ in 0..repeat {
            for line in &items {
                events.clear();
                updates.clear();
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    let tables = &self.tables;
                    tables.process(
                        line.as_bytes(),
                        &batch,
                        &mut scratch,
                        &mut events,
                        &mut updates,
                    )
                }));
            }
        }
        start.elapsed().as_secs_f64()
    }
}

/// How many lines were declined because the engine panicked (a bug, never expected).
#[pyfunction]
fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

#[pymodule]
fn consumer_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // A panic is caught per line and declined; keep its message off stderr, which
    // `classify` uses for dead letters.  `panics()` counts them instead.
    std::panic::set_hook(Box::new(|_| {}));
    module.add("INTERFACE", INTERFACE)?;
    module.add("ROLES", ROLES.to_vec())?;
    module.add_class::<FastPath>()?;
    module.add_function(wrap_pyfunction!(panics, module)?)?;
    Ok(())
}
