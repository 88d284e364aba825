//! `import` and `export`: JSON Lines in the record format of docs/rules.md §3.
//!
//! Import is all or nothing: every line is checked (syntax, types, rules, duplicate refs in
//! the file and against the database) and every problem is reported with its line number, ref
//! and field. Valid contracts are written chunk by chunk into one transaction as the file is
//! read, so memory holds one chunk and the refs seen, whatever the file's size; the
//! transaction is committed only when the whole file was clean.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};

use crate::clock::{business_date, unix_ms};
use crate::contract::export::ExportRecord;
use crate::contract::record::{read_record, InvalidContract, ParseDefaults};
use crate::contract::LeadTimes;
use crate::lifecycle::reminders::reschedule;
use crate::storage::{ContractImport, ContractStore, NewContract, StorageError};

/// One problem found in an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    /// 1-based line number in the file.
    pub line: usize,
    /// What is wrong, naming the ref and field.
    pub error: InvalidContract,
}

impl std::fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read the import file")]
    Read(#[from] std::io::Error),
    /// The file holds no contract.
    #[error("the import file holds no contracts")]
    Empty,
    /// Records break the rules; nothing was written.
    #[error("{} invalid record(s); nothing was imported", .0.len())]
    Invalid(Vec<ImportProblem>),
    /// The database failed; nothing was written.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Contracts written per insert while reading (and refs looked up per query once a problem
/// has been found): memory holds one chunk, whatever the size of the file.
const CHUNK: usize = 1000;

/// Check every line of `reader` and write the contracts, all or nothing: they are inserted
/// chunk by chunk into one transaction while the file is read, and committed only when every
/// line was valid and new; otherwise nothing is written and every problem is reported.
/// Computed fields are computed as of `now` in each contract's zone. `progress` is told how
/// many lines were read (for a terminal progress bar).
///
/// Contracts without their own `reminder_lead_times` get no reminders scheduled: see
/// [`import_with_lead_times`] for the configured lead times.
pub async fn import<S: ContractStore, R: BufRead>(
    store: &S,
    reader: R,
    defaults: &ParseDefaults,
    now: DateTime<Utc>,
    progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    import_with_lead_times(store, reader, defaults, &LeadTimes::NONE, now, progress).await
}

/// [`import`], scheduling each contract's first reminder with `lead_times` (the configured
/// `reminders.lead_times`) when it has no lead times of its own.
pub async fn import_with_lead_times<S: ContractStore, R: BufRead>(
    store: &S,
    reader: R,
    defaults: &ParseDefaults,
    lead_times: &LeadTimes,
    now: DateTime<Utc>,
    progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let mut importing = Importing {
        lead_times: *lead_times,
        store,
        writer: store.begin_import().await?,
        now_ms: unix_ms(now),
        problems: Vec::new(),
        lines_of_refs: HashMap::new(),
        valid: Vec::with_capacity(CHUNK),
        invalid_refs: Vec::new(),
        count: 0,
    };
    importing.read(reader, defaults, now, progress).await?;
    importing.flush_valid().await?;
    importing.check_invalid_refs().await?;
    let Importing {
        writer,
        mut problems,
        count,
        ..
    } = importing;
    if count == 0 && problems.is_empty() {
        return Err(ImportError::Empty);
    }
    if !problems.is_empty() {
        // Dropping the writer rolls back whatever was inserted.
        drop(writer);
        problems.sort_by_key(|problem| problem.line);
        return Err(ImportError::Invalid(problems));
    }
    writer.commit().await?;
    Ok(count)
}

/// The state of an import while its file is read.
struct Importing<'s, S: ContractStore> {
    /// The configured reminder lead times, for contracts without their own.
    lead_times: LeadTimes,
    /// Where existing refs are looked up once a problem stopped the writing.
    store: &'s S,
    /// The open transaction the valid contracts go into.
    writer: S::Import,
    /// When the import runs (the `imported` events' time).
    now_ms: i64,
    /// Everything wrong so far.
    problems: Vec<ImportProblem>,
    /// The first line of every ref seen, valid or not: duplicates name it, and so does a
    /// ref that exists in the database.
    lines_of_refs: HashMap<Box<str>, usize>,
    /// Valid contracts not yet written.
    valid: Vec<NewContract>,
    /// Refs of invalid records not yet looked up in the database.
    invalid_refs: Vec<String>,
    /// Valid records read.
    count: usize,
}

impl<S: ContractStore> Importing<'_, S> {
    async fn read<R: BufRead>(
        &mut self,
        mut reader: R,
        defaults: &ParseDefaults,
        now: DateTime<Utc>,
        mut progress: impl FnMut(usize),
    ) -> Result<(), ImportError> {
        let mut buffer = Vec::new();
        let mut number = 0;
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            number += 1;
            progress(number);
            let mut bytes = buffer.as_slice();
            if number == 1 {
                // Windows tools often start a UTF-8 file with a byte order mark.
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            // A line that is not UTF-8 is one bad record: report it and check the rest.
            let line = match std::str::from_utf8(bytes) {
                Ok(line) => line,
                Err(error) => {
                    self.problem(
                        number,
                        InvalidContract::single(None, "(record)", format!("not UTF-8: {error}")),
                    );
                    continue;
                }
            };
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            match read_record(line).and_then(|record| record.parse(defaults)) {
                Ok(mut contract) => {
                    if !self.claim_ref(number, &contract.reference) {
                        continue;
                    }
                    let today = business_date(now, contract.time_zone);
                    contract.recompute_cancellation_dates(today);
                    reschedule(&mut contract, &self.lead_times);
                    self.count += 1;
                    self.valid.push(NewContract {
                        contract,
                        imported_on: today,
                    });
                    if self.valid.len() >= CHUNK {
                        self.flush_valid().await?;
                    }
                }
                Err(error) => {
                    // An invalid record still claims its ref: a second record with the same
                    // ref is a duplicate too, and its ref is looked up in the database, so the
                    // operator learns of every problem in one run.
                    let reference = error.reference.clone();
                    self.problem(number, error);
                    if let Some(reference) = reference {
                        if self.claim_ref(number, &reference) {
                            self.invalid_refs.push(reference);
                            if self.invalid_refs.len() >= CHUNK {
                                self.check_invalid_refs().await?;
                            }
                        }
                    }
                }
            }
        }
    }

    fn problem(&mut self, line: usize, error: InvalidContract) {
        self.problems.push(ImportProblem { line, error });
    }

    /// Record the first line of `reference`; a later one is a duplicate (reported, `false`).
    fn claim_ref(&mut self, line: usize, reference: &str) -> bool {
        if let Some(first) = self.lines_of_refs.get(reference) {
            let error = InvalidContract::single(
                Some(reference.to_string()),
                "ref",
                format!("duplicate ref, already on line {first}"),
            );
            self.problem(line, error);
            return false;
        }
        self.lines_of_refs.insert(reference.into(), line);
        true
    }

    /// Write the pending valid contracts, or, once the import has a problem and will write
    /// nothing, only look their refs up. Either way a ref that exists is a problem.
    async fn flush_valid(&mut self) -> Result<(), ImportError> {
        if self.valid.is_empty() {
            return Ok(());
        }
        let existing = if self.problems.is_empty() {
            self.writer.insert(&self.valid, self.now_ms).await?
        } else {
            let references: Vec<String> = self
                .valid
                .iter()
                .map(|new| new.contract.reference.clone())
                .collect();
            self.store.existing_references(&references).await?
        };
        self.valid.clear();
        self.existing(existing);
        Ok(())
    }

    /// Look the pending refs of invalid records up in the database.
    async fn check_invalid_refs(&mut self) -> Result<(), ImportError> {
        if self.invalid_refs.is_empty() {
            return Ok(());
        }
        let references = std::mem::take(&mut self.invalid_refs);
        let existing = self.store.existing_references(&references).await?;
        self.existing(existing);
        Ok(())
    }

    /// A problem for each of `existing`, on the line that claimed the ref.
    fn existing(&mut self, existing: Vec<String>) {
        for reference in existing {
            let line = self
                .lines_of_refs
                .get(reference.as_str())
                .copied()
                .unwrap_or(0);
            let error = InvalidContract::single(
                Some(reference),
                "ref",
                "a contract with this ref already exists in the database",
            );
            self.problems.push(ImportProblem { line, error });
        }
    }
}

/// Write contracts as JSON Lines: all of them in id order, or the given refs. Rows that
/// break the rules cannot be exported faithfully: they are reported through `invalid` and
/// left out. Returns how many were written.
pub async fn export<S: ContractStore, W: std::io::Write>(
    store: &S,
    references: &[String],
    out: &mut W,
    mut invalid: impl FnMut(String),
) -> Result<usize, ExportError> {
    let mut written = 0;
    let mut write =
        |loaded: crate::storage::LoadedContract, out: &mut W| -> Result<(), ExportError> {
            match loaded.contract {
                Ok(contract) => {
                    serde_json::to_writer(&mut *out, &ExportRecord(&contract))
                        .map_err(std::io::Error::from)?;
                    out.write_all(b"\n")?;
                    written += 1;
                }
                Err(error) => invalid(error.to_string()),
            }
            Ok(())
        };
    if references.is_empty() {
        let mut after = 0;
        loop {
            let page = store.contracts_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for loaded in page {
                write(loaded, out)?;
            }
        }
    } else {
        // Look every ref up before writing any: an unknown ref is invalid input, and a
        // script must not be left with half an export.
        let mut found = Vec::with_capacity(references.len());
        for reference in references {
            match store.load_contract(reference).await? {
                Some(loaded) => found.push(loaded),
                None => return Err(ExportError::NotFound(reference.clone())),
            }
        }
        for loaded in found {
            write(loaded, out)?;
        }
    }
    out.flush()?;
    Ok(written)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the output failed.
    #[error("cannot write the export")]
    Write(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A requested ref does not exist.
    #[error("no contract '{0}'")]
    NotFound(String),
}
