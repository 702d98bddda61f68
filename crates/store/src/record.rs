//! What the SQL stores share: a record's JSON columns both ways, the outcome of an INSERT,
//! a chain cut at its first gap, and the clock.

use localgem_core::{InteractionRecord, StoreError};
use localgem_wire::{Status, Step, Usage};

/// A record's JSON columns: input, output, usage, resolved input.
pub(crate) struct Encoded {
    pub input: String,
    pub output: String,
    pub usage: String,
    pub resolved: Option<String>,
}

/// The JSON columns of a record.
pub(crate) fn encode(record: &InteractionRecord) -> Result<Encoded, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        id: record.id.clone(),
        reason: e.to_string(),
    };
    Ok(Encoded {
        input: serde_json::to_string(&record.input).map_err(corrupt)?,
        output: serde_json::to_string(&record.output).map_err(corrupt)?,
        usage: serde_json::to_string(&record.usage).map_err(corrupt)?,
        resolved: record
            .resolved_input
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?,
    })
}

/// A record from its columns (JSON ones as text).
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    id: String,
    tenant: String,
    model: String,
    status: &str,
    created: i64,
    updated: i64,
    previous_interaction_id: Option<String>,
    json: [&str; 3],
    resolved: Option<&str>,
    error: Option<String>,
) -> Result<InteractionRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    let [input, output, usage] = json;
    Ok(InteractionRecord {
        status: Status::parse(status).ok_or_else(|| corrupt(format!("status {status}")))?,
        input: serde_json::from_str::<Vec<Step>>(input).map_err(|e| corrupt(e.to_string()))?,
        output: serde_json::from_str::<Vec<Step>>(output).map_err(|e| corrupt(e.to_string()))?,
        usage: serde_json::from_str::<Usage>(usage).map_err(|e| corrupt(e.to_string()))?,
        resolved_input: resolved
            .map(serde_json::from_str::<Vec<Step>>)
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        tenant,
        model,
        created,
        updated,
        previous_interaction_id,
        error,
        id,
    })
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The outcome of an INSERT: a taken id is [`StoreError::Duplicate`]; other failures as the
/// backend classifies them.
pub(crate) fn inserted<T>(
    res: Result<T, sqlx::Error>,
    id: &str,
    backend: impl FnOnce(sqlx::Error) -> StoreError,
) -> Result<(), StoreError> {
    match res {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Duplicate(id.to_owned()))
        }
        Err(e) => Err(backend(e)),
    }
}

/// A chain read newest first, cut at the first gap: a missing (or foreign) earlier turn ends
/// it there, so the last record's `previous_interaction_id` names what is missing.
pub(crate) fn contiguous(
    records: impl Iterator<Item = Result<InteractionRecord, StoreError>>,
) -> Result<Vec<InteractionRecord>, StoreError> {
    let mut out: Vec<InteractionRecord> = Vec::new();
    for r in records {
        let r = r?;
        if let Some(prev) = out.last() {
            if prev.previous_interaction_id.as_deref() != Some(r.id.as_str()) {
                break;
            }
        }
        out.push(r);
    }
    Ok(out)
}
