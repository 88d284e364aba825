//! `import` and `export`: JSON Lines in the record format of SPEC section 3.
//!
//! Import is all or nothing: every line is read and checked first (syntax, types, rules,
//! duplicate refs in the file and against the database), every problem is reported with its
//! line number, ref and field, and only a clean file is written, in one transaction.

use std::collections::HashMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};

use crate::clock::{business_date, unix_ms};
use crate::contract::record::{read_record, ContractRecord, InvalidContract, ParseDefaults};
use crate::storage::{ContractStore, NewContract, StorageError};

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
    #[error("cannot read the import file: {0}")]
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

/// Check every line of `reader` and, when all are valid and new, insert them in one
/// transaction. Computed fields are computed as of `now` in each contract's zone. `progress`
/// is told how many lines were read (for a terminal progress bar).
pub async fn import<S: ContractStore, R: BufRead>(
    store: &S,
    reader: R,
    defaults: &ParseDefaults,
    now: DateTime<Utc>,
    mut progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let mut problems = Vec::new();
    let mut contracts = Vec::new();
    let mut lines_of_refs: HashMap<String, usize> = HashMap::new();
    let mut reader = reader;
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            break;
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
                problems.push(ImportProblem {
                    line: number,
                    error: InvalidContract::single(None, "(record)", format!("not UTF-8: {error}")),
                });
                continue;
            }
        };
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let parsed = read_record(line).and_then(|record| record.parse(defaults));
        match parsed {
            Ok(mut contract) => {
                if let Some(first) = lines_of_refs.get(&contract.reference) {
                    problems.push(ImportProblem {
                        line: number,
                        error: InvalidContract::single(
                            Some(contract.reference.clone()),
                            "ref",
                            format!("duplicate ref, already on line {first}"),
                        ),
                    });
                    continue;
                }
                lines_of_refs.insert(contract.reference.clone(), number);
                let today = business_date(now, contract.time_zone);
                contract.recompute_cancellation_dates(today);
                contracts.push(NewContract {
                    contract,
                    imported_on: today,
                });
            }
            Err(error) => {
                // An invalid record still claims its ref: a second record with the same ref
                // is a duplicate too, and the operator learns of both in one run.
                let reference = error.reference.clone();
                problems.push(ImportProblem {
                    line: number,
                    error,
                });
                if let Some(reference) = reference {
                    match lines_of_refs.get(&reference) {
                        Some(first) => problems.push(ImportProblem {
                            line: number,
                            error: InvalidContract::single(
                                Some(reference),
                                "ref",
                                format!("duplicate ref, already on line {first}"),
                            ),
                        }),
                        None => {
                            lines_of_refs.insert(reference, number);
                        }
                    }
                }
            }
        }
    }
    if contracts.is_empty() && problems.is_empty() {
        return Err(ImportError::Empty);
    }
    // Every ref of the file, of invalid records too, is checked against the database.
    let references: Vec<String> = lines_of_refs.keys().cloned().collect();
    for existing in store.existing_references(&references).await? {
        problems.push(ImportProblem {
            line: lines_of_refs.get(&existing).copied().unwrap_or(0),
            error: InvalidContract::single(
                Some(existing),
                "ref",
                "a contract with this ref already exists in the database",
            ),
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|problem| problem.line);
        return Err(ImportError::Invalid(problems));
    }
    match store.insert_contracts(&contracts, unix_ms(now)).await {
        Ok(()) => Ok(contracts.len()),
        Err(StorageError::DuplicateReference(reference)) => {
            Err(ImportError::Invalid(vec![ImportProblem {
                line: lines_of_refs.get(&reference).copied().unwrap_or(0),
                error: InvalidContract::single(
                    Some(reference),
                    "ref",
                    "a contract with this ref was created meanwhile",
                ),
            }]))
        }
        Err(error) => Err(error.into()),
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
                    serde_json::to_writer(&mut *out, &ContractRecord::from_contract(&contract))
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
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A requested ref does not exist.
    #[error("no contract '{0}'")]
    NotFound(String),
}
