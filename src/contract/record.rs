//! The JSON Lines record of a contract (import and export format, docs/rules.md §3) and its
//! parsing into a valid [`Contract`].
//!
//! Parsing collects every problem of a record, each naming its field (`lines[2].start_date`),
//! so an operator can fix a whole file in one go.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::reminder::{LeadTimes, ReminderKind, Reminders, SentReminder};
use super::{
    BillingDocument, BillingSchedule, Cancellation, ChangeRequest, ChangeRequestStatus, Contract,
    ContractStatus, DocumentKind, DocumentStatus, Line, LineKind, LineStatus, Proration, Renewal,
    RenewalStatus, ScheduleStatus,
};
use crate::calendar::{previous_day, shift, CancellationWindow, Period};

/// A contract as one line of the import/export file. Text fields are checked by
/// [`ContractRecord::parse`], not by serde, so every error can name its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRecord {
    /// External reference, unique, 1..=64 printable characters.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Customer name or reference.
    pub customer: String,
    /// `draft`, `active` (default), `expired`, `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
    /// IANA zone; the configured default when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// First day of service, `YYYY-MM-DD`.
    pub start_date: String,
    /// Last day of service (inclusive), or null for open-ended.
    #[serde(default)]
    pub end_date: Option<String>,
    /// Gives the end date when `end_date` is absent: `shift(start, term) − 1 day`.
    #[serde(default)]
    pub initial_term: Option<String>,
    /// End date before the first early end or cancellation.
    #[serde(default)]
    pub original_end_date: Option<String>,
    /// No cancellation may end the contract before this date.
    #[serde(default)]
    pub minimum_term_end: Option<String>,
    /// Period, default `0D`.
    #[serde(default)]
    pub notice_period: Option<String>,
    /// `end_of_term`, `end_of_month`, `end_of_quarter`, `end_of_year`.
    pub cancellation_window: String,
    /// Extend by `extension_term` when not cancelled in time.
    pub auto_extend: bool,
    /// Required with `auto_extend`.
    #[serde(default)]
    pub extension_term: Option<String>,
    /// `actual_days` (default) or `none`.
    #[serde(default)]
    pub proration: Option<String>,
    /// Contract lines.
    #[serde(default)]
    pub lines: Vec<LineRecord>,
    /// Billing schedules of the lines.
    #[serde(default)]
    pub schedules: Vec<ScheduleRecord>,
    /// Billing documents.
    #[serde(default)]
    pub documents: Vec<DocumentRecord>,
    /// A pending cancellation of the whole contract.
    #[serde(default)]
    pub cancellation: Option<CancellationRecord>,
    /// Why it was ended early or cancelled.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Operator's notes on the early end or cancellation.
    #[serde(default)]
    pub end_notes: Option<String>,
    /// Computed: exported, ignored on import.
    #[serde(default)]
    pub cancellation_date: Option<String>,
    /// Computed: exported, ignored on import.
    #[serde(default)]
    pub latest_cancellation_date: Option<String>,
    /// Renewals.
    #[serde(default)]
    pub renewals: Vec<ReferenceRecord>,
    /// Change requests.
    #[serde(default)]
    pub change_requests: Vec<ReferenceRecord>,
    /// The contract's own reminder lead times (periods); absent or null: the configured ones;
    /// an empty list: no reminders (docs/rules.md §5.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder_lead_times: Option<Vec<String>>,
    /// Reminders already sent for dates still ahead, so that none is sent twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminders_sent: Vec<SentReminderRecord>,
    /// Computed: the day the next reminder falls due; exported, ignored on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_reminder_on: Option<String>,
}

/// A reminder that was sent, in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentReminderRecord {
    /// `deadline_approaching` or `end_approaching`.
    pub kind: String,
    /// The date reminded of.
    pub date: String,
    /// The lead time it was sent for.
    pub lead_time: String,
}

/// A contract line in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRecord {
    /// Unique within the contract.
    #[serde(rename = "ref")]
    pub reference: String,
    /// What is delivered.
    #[serde(default)]
    pub description: String,
    /// `recurring_fixed`, `recurring_usage`, `one_time`.
    pub kind: String,
    /// Only billable lines can be cancelled on their own.
    pub billable: bool,
    /// First day of the line.
    pub start_date: String,
    /// Last day of the line, or null.
    #[serde(default)]
    pub end_date: Option<String>,
    /// `active` (default), `cancelled`, `expired`.
    #[serde(default)]
    pub status: Option<String>,
    /// Amount per billing period in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Billing period; required for recurring lines.
    #[serde(default)]
    pub billing_period: Option<String>,
    /// Moves with the contract's auto extension (default false).
    #[serde(default)]
    pub auto_extend: bool,
    /// A pending cancellation of this line only.
    #[serde(default)]
    pub cancellation: Option<CancellationRecord>,
}

/// A billing schedule in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRecord {
    /// The line it bills.
    pub line_ref: String,
    /// First day billed.
    pub period_start: String,
    /// Last day billed.
    pub period_end: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// `planned` or `billed`.
    pub status: String,
    /// The billing document it was billed on.
    #[serde(default)]
    pub document: Option<String>,
}

/// A billing document in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRecord {
    /// Unique within the contract.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    /// `draft`, `ready_for_review`, `complete`.
    pub status: String,
    /// Bills several contracts at once.
    #[serde(default)]
    pub consolidated: bool,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A pending cancellation in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancellationRecord {
    /// Day the cancellation was received.
    pub received_on: String,
    /// Last day of service once executed.
    pub end_date: String,
    /// Reason code.
    #[serde(default)]
    pub reason: Option<String>,
    /// Operator's notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Create a final invoice on execution.
    #[serde(default)]
    pub final_invoice: bool,
    /// `auto_extend` to restore on revoke.
    #[serde(default)]
    pub restore_auto_extend: bool,
}

/// A renewal or change request in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRecord {
    /// Its external reference.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its status.
    pub status: String,
}

/// One problem with one field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `lines[1].amount_minor`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A record that breaks the rules of docs/rules.md §3.3, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidContract {
    /// The record's `ref`, when it has one.
    pub reference: Option<String>,
    /// Every problem, in field order.
    pub errors: Vec<FieldError>,
}

impl InvalidContract {
    /// A record with a single problem.
    pub fn single(reference: Option<String>, field: &str, message: impl Into<String>) -> Self {
        InvalidContract {
            reference,
            errors: vec![FieldError {
                field: field.to_string(),
                message: message.into(),
            }],
        }
    }
}

impl InvalidContract {
    /// The problems alone, without the contract they belong to ("field: what; …"), for a
    /// message that names the contract itself.
    pub fn problems(&self) -> Problems<'_> {
        Problems(&self.errors)
    }
}

/// The problems of an [`InvalidContract`], written as "field: what; field: what".
#[derive(Debug, Clone, Copy)]
pub struct Problems<'a>(&'a [FieldError]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write_escaped(f, &error.to_string())?;
        }
        Ok(())
    }
}

/// Write `text` with its control characters escaped, so that input (a ref holding an escape
/// sequence or a newline) cannot rewrite a terminal or forge a log line.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    use fmt::Write as _;
    for character in text.chars() {
        if character.is_control() {
            write!(f, "{}", character.escape_default())?;
        } else {
            f.write_char(character)?;
        }
    }
    Ok(())
}

impl fmt::Display for InvalidContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Some(reference) => write_escaped(f, &format!("contract '{reference}': "))?,
            None => f.write_str("contract: ")?,
        }
        self.problems().fmt(f)
    }
}

/// What parsing needs from configuration.
#[derive(Debug, Clone, Copy)]
pub struct ParseDefaults {
    /// Zone of records that name none.
    pub time_zone: Tz,
}

/// Collects field errors while a record is parsed.
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn date(&mut self, field: impl Into<String>, text: &str) -> Option<NaiveDate> {
        let field = field.into();
        match parse_date(text) {
            Some(date) => Some(date),
            None => {
                self.fail(
                    field,
                    format!("'{text}' is not a date (expected YYYY-MM-DD)"),
                );
                None
            }
        }
    }

    fn optional_date(&mut self, field: impl Into<String>, text: Option<&str>) -> Option<NaiveDate> {
        text.and_then(|text| self.date(field, text))
    }

    fn period(&mut self, field: impl Into<String>, text: &str) -> Option<Period> {
        match Period::parse(text) {
            Ok(period) => Some(period),
            Err(error) => {
                self.fail(field, error.to_string());
                None
            }
        }
    }

    fn enumerated<T>(
        &mut self,
        field: impl Into<String>,
        text: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: String,
    ) -> Option<T> {
        let parsed = parse(text);
        if parsed.is_none() {
            self.fail(
                field,
                format!("'{text}' is not valid (expected one of {expected})"),
            );
        }
        parsed
    }

    fn amount(&mut self, field: impl Into<String>, amount: i64) {
        if amount < 0 {
            self.fail(field, format!("{amount} is negative"));
        }
    }

    fn currency(&mut self, field: impl Into<String>, code: &str) {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            self.fail(
                field,
                format!("'{code}' is not an ISO 4217 code (three capital letters)"),
            );
        }
    }

    fn reference(&mut self, field: impl Into<String>, reference: &str) {
        let length = reference.chars().count();
        if !(1..=64).contains(&length) {
            self.fail(field, format!("must be 1 to 64 characters, has {length}"));
        } else if reference.chars().any(char::is_control) {
            self.fail(field, "must contain printable characters only");
        }
    }
}

/// Parse a civil date written `YYYY-MM-DD` (exactly that shape).
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

/// Write a civil date as `YYYY-MM-DD`.
///
/// Written digit by digit: every event, record and changed row of a sweep formats several
/// dates, and chrono's `format` re-reads its pattern each time (6% of a SQLite sweep's
/// instructions went there). Years outside 0–9999, which `parse_date` never produces, fall
/// back to chrono's own form.
pub fn format_date(date: NaiveDate) -> String {
    match date_digits(date) {
        Some(digits) => digits.iter().map(|&byte| char::from(byte)).collect(),
        None => date.format("%Y-%m-%d").to_string(),
    }
}

/// A date in years 0–9999 as its ten ASCII bytes `YYYY-MM-DD`, without allocating; `None`
/// outside those years (see [`format_date`], and the export record's writer).
pub(crate) fn date_digits(date: NaiveDate) -> Option<[u8; 10]> {
    let year = u32::try_from(date.year())
        .ok()
        .filter(|&year| year <= 9999)?;
    let digit = |value: u32| b'0' + (value % 10) as u8;
    Some([
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(date.month() / 10),
        digit(date.month()),
        b'-',
        digit(date.day() / 10),
        digit(date.day()),
    ])
}

impl ContractRecord {
    /// Check every rule of docs/rules.md §3.3 and build the contract. Computed fields in the
    /// record are ignored: `cancellation_date` and `latest_cancellation_date` come back
    /// empty, for the caller to compute as of its business date.
    pub fn parse(&self, defaults: &ParseDefaults) -> Result<Contract, InvalidContract> {
        let mut check = Checker { errors: Vec::new() };
        check.reference("ref", &self.reference);
        if self.customer.trim().is_empty() {
            check.fail("customer", "must not be empty");
        }
        let status = match &self.status {
            Some(text) => check.enumerated(
                "status",
                text,
                ContractStatus::parse,
                ContractStatus::expected(),
            ),
            None => Some(ContractStatus::Active),
        };
        let time_zone = match &self.time_zone {
            Some(name) => match name.parse::<Tz>() {
                Ok(zone) => Some(zone),
                Err(_) => {
                    check.fail("time_zone", format!("'{name}' is not an IANA time zone"));
                    None
                }
            },
            None => Some(defaults.time_zone),
        };
        let start_date = check.date("start_date", &self.start_date);
        let mut end_date = check.optional_date("end_date", self.end_date.as_deref());
        let initial_term = self
            .initial_term
            .as_deref()
            .and_then(|text| check.period("initial_term", text));
        if let (None, None, Some(term), Some(start)) =
            (&self.end_date, end_date, initial_term, start_date)
        {
            if term.is_none() {
                check.fail("initial_term", "must be longer than 0 to give an end date");
            } else {
                end_date = Some(previous_day(shift(start, term)));
            }
        }
        if let (Some(start), Some(end)) = (start_date, end_date) {
            if end < start {
                check.fail(
                    "end_date",
                    format!("{end} is before the start date {start}"),
                );
            }
        }
        let original_end_date =
            check.optional_date("original_end_date", self.original_end_date.as_deref());
        let minimum_term_end =
            check.optional_date("minimum_term_end", self.minimum_term_end.as_deref());
        let notice_period = match &self.notice_period {
            Some(text) => check.period("notice_period", text),
            None => Some(Period::NONE),
        };
        let cancellation_window = match self.cancellation_window.parse::<CancellationWindow>() {
            Ok(window) => Some(window),
            Err(error) => {
                check.fail("cancellation_window", error.to_string());
                None
            }
        };
        if cancellation_window == Some(CancellationWindow::EndOfTerm) && end_date.is_none() {
            check.fail(
                "cancellation_window",
                "end_of_term needs an end date (or an initial term)",
            );
        }
        let extension_term = self
            .extension_term
            .as_deref()
            .and_then(|text| check.period("extension_term", text));
        if self.auto_extend {
            match (&self.extension_term, extension_term) {
                (None, _) => check.fail("extension_term", "is required when auto_extend is true"),
                (Some(_), Some(term)) if term.is_none() => check.fail(
                    "extension_term",
                    "must be longer than 0 when auto_extend is true",
                ),
                _ => {}
            }
        }
        let proration = match &self.proration {
            Some(text) => {
                check.enumerated("proration", text, Proration::parse, Proration::expected())
            }
            None => Some(Proration::ActualDays),
        };

        let lines = self.parse_lines(&mut check, start_date, end_date);
        let documents = self.parse_documents(&mut check);
        let schedules = self.parse_schedules(&mut check, &lines, &documents);
        let cancellation = self.cancellation.as_ref().and_then(|record| {
            let parsed = record.parse(&mut check, "cancellation");
            if status.is_some_and(|status| status != ContractStatus::Active) {
                check.fail(
                    "cancellation",
                    "only an active contract can have a pending cancellation",
                );
            }
            if let (Some(pending), Some(start)) = (&parsed, start_date) {
                if pending.end_date < start {
                    check.fail(
                        "cancellation.end_date",
                        format!("{} is before the start date {start}", pending.end_date),
                    );
                }
            }
            parsed
        });
        let renewals = parse_references(
            &mut check,
            "renewals",
            &self.renewals,
            RenewalStatus::parse,
            RenewalStatus::expected(),
        )
        .into_iter()
        .map(|(reference, status)| Renewal { reference, status })
        .collect();
        let change_requests = parse_references(
            &mut check,
            "change_requests",
            &self.change_requests,
            ChangeRequestStatus::parse,
            ChangeRequestStatus::expected(),
        )
        .into_iter()
        .map(|(reference, status)| ChangeRequest { reference, status })
        .collect();

        let reminders = self.parse_reminders(&mut check);

        let reference = Some(self.reference.clone());
        match (
            status,
            time_zone,
            start_date,
            notice_period,
            cancellation_window,
            proration,
        ) {
            (
                Some(status),
                Some(time_zone),
                Some(start_date),
                Some(notice_period),
                Some(cancellation_window),
                Some(proration),
            ) if check.errors.is_empty() => Ok(Contract {
                reference: self.reference.clone(),
                customer: self.customer.clone(),
                status,
                time_zone,
                start_date,
                end_date,
                initial_term,
                original_end_date,
                minimum_term_end,
                notice_period,
                cancellation_window,
                auto_extend: self.auto_extend,
                extension_term,
                proration,
                lines: lines.into_iter().flatten().collect(),
                schedules,
                documents,
                cancellation,
                end_reason: self.end_reason.clone(),
                end_notes: self.end_notes.clone(),
                cancellation_date: None,
                latest_cancellation_date: None,
                renewals,
                change_requests,
                reminders,
            }),
            _ => Err(InvalidContract {
                reference,
                errors: check.errors,
            }),
        }
    }

    /// The reminder fields: own lead times and reminders sent (`next_on` is left for the
    /// caller to compute).
    fn parse_reminders(&self, check: &mut Checker) -> Reminders {
        let lead_times = self.reminder_lead_times.as_ref().and_then(|texts| {
            let periods: Vec<Option<Period>> = texts
                .iter()
                .enumerate()
                .map(|(index, text)| check.period(format!("reminder_lead_times[{index}]"), text))
                .collect();
            let periods: Option<Vec<Period>> = periods.into_iter().collect();
            match LeadTimes::new(&periods?) {
                Ok(list) => Some(list),
                Err(error) => {
                    check.fail("reminder_lead_times", error.to_string());
                    None
                }
            }
        });
        let mut sent = Vec::new();
        for (index, record) in self.reminders_sent.iter().enumerate() {
            let prefix = format!("reminders_sent[{index}]");
            let kind = check.enumerated(
                format!("{prefix}.kind"),
                &record.kind,
                ReminderKind::parse,
                ReminderKind::expected(),
            );
            let date = check.date(format!("{prefix}.date"), &record.date);
            let lead_time = check.period(format!("{prefix}.lead_time"), &record.lead_time);
            if let (Some(kind), Some(date), Some(lead_time)) = (kind, date, lead_time) {
                let reminder = SentReminder {
                    kind,
                    date,
                    lead_time,
                };
                if sent.contains(&reminder) {
                    check.fail(prefix, "is listed twice");
                } else {
                    sent.push(reminder);
                }
            }
        }
        Reminders {
            lead_times,
            sent,
            next_on: None,
        }
    }

    /// Lines, each `None` where it was invalid (so indexes stay aligned with the record).
    fn parse_lines(
        &self,
        check: &mut Checker,
        contract_start: Option<NaiveDate>,
        contract_end: Option<NaiveDate>,
    ) -> Vec<Option<Line>> {
        let mut seen = std::collections::HashSet::new();
        self.lines
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let at = |field: &str| format!("lines[{index}].{field}");
                check.reference(at("ref"), &record.reference);
                if !seen.insert(record.reference.as_str()) {
                    check.fail(
                        at("ref"),
                        format!("duplicate line ref '{}'", record.reference),
                    );
                }
                let kind = check.enumerated(
                    at("kind"),
                    &record.kind,
                    LineKind::parse,
                    LineKind::expected(),
                );
                let start_date = check.date(at("start_date"), &record.start_date);
                let end_date = check.optional_date(at("end_date"), record.end_date.as_deref());
                let status = match &record.status {
                    Some(text) => check.enumerated(
                        at("status"),
                        text,
                        LineStatus::parse,
                        LineStatus::expected(),
                    ),
                    None => Some(LineStatus::Active),
                };
                check.amount(at("amount_minor"), record.amount_minor);
                check.currency(at("currency"), &record.currency);
                let billing_period = record
                    .billing_period
                    .as_deref()
                    .and_then(|text| check.period(at("billing_period"), text));
                if matches!(
                    kind,
                    Some(LineKind::RecurringFixed | LineKind::RecurringUsage)
                ) && record.billing_period.is_none()
                {
                    check.fail(at("billing_period"), "is required for a recurring line");
                }
                if let (Some(start), Some(end)) = (start_date, end_date) {
                    if end < start {
                        check.fail(
                            at("end_date"),
                            format!("{end} is before the line's start date {start}"),
                        );
                    }
                }
                if let (Some(start), Some(contract_start)) = (start_date, contract_start) {
                    if start < contract_start {
                        check.fail(
                            at("start_date"),
                            format!("{start} is before the contract's start date {contract_start}"),
                        );
                    }
                }
                // A line cancelled because it would only have started after an early end
                // keeps its own dates: it is history, not a line outside the contract.
                let cancelled = status == Some(LineStatus::Cancelled);
                if let Some(contract_end) = contract_end.filter(|_| !cancelled) {
                    if let Some(start) = start_date.filter(|start| *start > contract_end) {
                        check.fail(
                            at("start_date"),
                            format!("{start} is after the contract's end date {contract_end}"),
                        );
                    }
                    if let Some(end) = end_date.filter(|end| *end > contract_end) {
                        check.fail(
                            at("end_date"),
                            format!("{end} is after the contract's end date {contract_end}"),
                        );
                    }
                }
                let cancellation = record.cancellation.as_ref().and_then(|pending| {
                    let prefix = at("cancellation");
                    if !record.billable {
                        check.fail(
                            prefix.clone(),
                            "only a billable line can be cancelled on its own",
                        );
                    }
                    if status.is_some_and(|status| status != LineStatus::Active) {
                        check.fail(
                            prefix.clone(),
                            "only an active line can have a pending cancellation",
                        );
                    }
                    pending.parse(check, &prefix)
                });
                Some(Line {
                    reference: record.reference.clone(),
                    description: record.description.clone(),
                    kind: kind?,
                    billable: record.billable,
                    start_date: start_date?,
                    end_date,
                    status: status?,
                    amount_minor: record.amount_minor,
                    currency: record.currency.clone(),
                    billing_period,
                    auto_extend: record.auto_extend,
                    cancellation,
                })
            })
            .collect()
    }

    fn parse_documents(&self, check: &mut Checker) -> Vec<BillingDocument> {
        let mut seen = std::collections::HashSet::new();
        self.documents
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let at = |field: &str| format!("documents[{index}].{field}");
                check.reference(at("ref"), &record.reference);
                if !seen.insert(record.reference.as_str()) {
                    check.fail(
                        at("ref"),
                        format!("duplicate document ref '{}'", record.reference),
                    );
                }
                let kind = check.enumerated(
                    at("kind"),
                    &record.kind,
                    DocumentKind::parse,
                    DocumentKind::expected(),
                );
                let status = check.enumerated(
                    at("status"),
                    &record.status,
                    DocumentStatus::parse,
                    DocumentStatus::expected(),
                );
                check.amount(at("amount_minor"), record.amount_minor);
                check.currency(at("currency"), &record.currency);
                Some(BillingDocument {
                    reference: record.reference.clone(),
                    kind: kind?,
                    status: status?,
                    consolidated: record.consolidated,
                    amount_minor: record.amount_minor,
                    currency: record.currency.clone(),
                })
            })
            .collect()
    }

    fn parse_schedules(
        &self,
        check: &mut Checker,
        lines: &[Option<Line>],
        documents: &[BillingDocument],
    ) -> Vec<BillingSchedule> {
        self.schedules
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let at = |field: &str| format!("schedules[{index}].{field}");
                if !self
                    .lines
                    .iter()
                    .any(|line| line.reference == record.line_ref)
                {
                    check.fail(
                        at("line_ref"),
                        format!("no line '{}' in this contract", record.line_ref),
                    );
                }
                let start = check.date(at("period_start"), &record.period_start);
                let end = check.date(at("period_end"), &record.period_end);
                if let (Some(start), Some(end)) = (start, end) {
                    if end < start {
                        check.fail(
                            at("period_end"),
                            format!("{end} is before the period start {start}"),
                        );
                    }
                }
                check.amount(at("amount_minor"), record.amount_minor);
                let status = check.enumerated(
                    at("status"),
                    &record.status,
                    ScheduleStatus::parse,
                    ScheduleStatus::expected(),
                );
                if let Some(document) = &record.document {
                    if !documents.iter().any(|known| &known.reference == document) {
                        check.fail(
                            at("document"),
                            format!("no document '{document}' in this contract"),
                        );
                    }
                }
                let _ = lines;
                Some(BillingSchedule {
                    line_ref: record.line_ref.clone(),
                    period_start: start?,
                    period_end: end?,
                    amount_minor: record.amount_minor,
                    status: status?,
                    document: record.document.clone(),
                })
            })
            .collect()
    }

    /// The record of a contract, computed fields included (the export format).
    pub fn from_contract(contract: &Contract) -> ContractRecord {
        let date = |value: Option<NaiveDate>| value.map(format_date);
        ContractRecord {
            reference: contract.reference.clone(),
            customer: contract.customer.clone(),
            status: Some(contract.status.as_str().to_string()),
            time_zone: Some(contract.time_zone.name().to_string()),
            start_date: format_date(contract.start_date),
            end_date: date(contract.end_date),
            initial_term: contract.initial_term.map(|term| term.to_string()),
            original_end_date: date(contract.original_end_date),
            minimum_term_end: date(contract.minimum_term_end),
            notice_period: Some(contract.notice_period.to_string()),
            cancellation_window: contract.cancellation_window.as_str().to_string(),
            auto_extend: contract.auto_extend,
            extension_term: contract.extension_term.map(|term| term.to_string()),
            proration: Some(contract.proration.as_str().to_string()),
            lines: contract
                .lines
                .iter()
                .map(|line| LineRecord {
                    reference: line.reference.clone(),
                    description: line.description.clone(),
                    kind: line.kind.as_str().to_string(),
                    billable: line.billable,
                    start_date: format_date(line.start_date),
                    end_date: date(line.end_date),
                    status: Some(line.status.as_str().to_string()),
                    amount_minor: line.amount_minor,
                    currency: line.currency.clone(),
                    billing_period: line.billing_period.map(|period| period.to_string()),
                    auto_extend: line.auto_extend,
                    cancellation: line
                        .cancellation
                        .as_ref()
                        .map(CancellationRecord::from_cancellation),
                })
                .collect(),
            schedules: contract
                .schedules
                .iter()
                .map(|schedule| ScheduleRecord {
                    line_ref: schedule.line_ref.clone(),
                    period_start: format_date(schedule.period_start),
                    period_end: format_date(schedule.period_end),
                    amount_minor: schedule.amount_minor,
                    status: schedule.status.as_str().to_string(),
                    document: schedule.document.clone(),
                })
                .collect(),
            documents: contract
                .documents
                .iter()
                .map(|document| DocumentRecord {
                    reference: document.reference.clone(),
                    kind: document.kind.as_str().to_string(),
                    status: document.status.as_str().to_string(),
                    consolidated: document.consolidated,
                    amount_minor: document.amount_minor,
                    currency: document.currency.clone(),
                })
                .collect(),
            cancellation: contract
                .cancellation
                .as_ref()
                .map(CancellationRecord::from_cancellation),
            end_reason: contract.end_reason.clone(),
            end_notes: contract.end_notes.clone(),
            cancellation_date: date(contract.cancellation_date),
            latest_cancellation_date: date(contract.latest_cancellation_date),
            renewals: contract
                .renewals
                .iter()
                .map(|renewal| ReferenceRecord {
                    reference: renewal.reference.clone(),
                    status: renewal.status.as_str().to_string(),
                })
                .collect(),
            change_requests: contract
                .change_requests
                .iter()
                .map(|request| ReferenceRecord {
                    reference: request.reference.clone(),
                    status: request.status.as_str().to_string(),
                })
                .collect(),
            reminder_lead_times: contract.reminders.lead_times.map(|list| list.to_strings()),
            reminders_sent: contract
                .reminders
                .sent
                .iter()
                .map(|sent| SentReminderRecord {
                    kind: sent.kind.as_str().to_string(),
                    date: format_date(sent.date),
                    lead_time: sent.lead_time.to_string(),
                })
                .collect(),
            next_reminder_on: date(contract.reminders.next_on),
        }
    }
}

impl CancellationRecord {
    fn parse(&self, check: &mut Checker, prefix: &str) -> Option<Cancellation> {
        let received_on = check.date(format!("{prefix}.received_on"), &self.received_on);
        let end_date = check.date(format!("{prefix}.end_date"), &self.end_date);
        Some(Cancellation {
            received_on: received_on?,
            end_date: end_date?,
            reason: self.reason.clone(),
            notes: self.notes.clone(),
            final_invoice: self.final_invoice,
            restore_auto_extend: self.restore_auto_extend,
        })
    }

    fn from_cancellation(cancellation: &Cancellation) -> CancellationRecord {
        CancellationRecord {
            received_on: format_date(cancellation.received_on),
            end_date: format_date(cancellation.end_date),
            reason: cancellation.reason.clone(),
            notes: cancellation.notes.clone(),
            final_invoice: cancellation.final_invoice,
            restore_auto_extend: cancellation.restore_auto_extend,
        }
    }
}

fn parse_references<T>(
    check: &mut Checker,
    list: &str,
    records: &[ReferenceRecord],
    parse: fn(&str) -> Option<T>,
    expected: String,
) -> Vec<(String, T)> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .enumerate()
        .filter_map(|(index, record)| {
            check.reference(format!("{list}[{index}].ref"), &record.reference);
            if !seen.insert(record.reference.as_str()) {
                check.fail(
                    format!("{list}[{index}].ref"),
                    format!("duplicate ref '{}'", record.reference),
                );
            }
            let status = check.enumerated(
                format!("{list}[{index}].status"),
                &record.status,
                parse,
                expected.clone(),
            )?;
            Some((record.reference.clone(), status))
        })
        .collect()
}

/// Read one line of the import file: JSON syntax and types are checked here (the error names
/// the field path), the rules by [`ContractRecord::parse`].
pub fn read_record(line: &str) -> Result<ContractRecord, InvalidContract> {
    // JSON can carry a NUL character (\u0000) that PostgreSQL text cannot store: refuse it
    // here, naming the field, rather than fail the whole import in the database.
    if line.contains("\\u0000") {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(field) = nul_field(&value, String::new()) {
                let reference = value
                    .get("ref")
                    .and_then(|r| r.as_str())
                    .map(str::to_string);
                return Err(InvalidContract::single(
                    reference.map(|r| r.replace('\0', "\\u0000")),
                    &field,
                    "must not contain a NUL character (\\u0000)",
                ));
            }
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(line);
    let record: Result<ContractRecord, _> = serde_path_to_error::deserialize(&mut deserializer);
    if record.is_ok() {
        if let Err(error) = deserializer.end() {
            return Err(InvalidContract::single(
                None,
                "(record)",
                format!(
                    "trailing characters after the record: {}",
                    column_only(&error)
                ),
            ));
        }
    }
    record.map_err(|error| {
        let path = error.path().to_string();
        let reference = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|value| value.get("ref")?.as_str().map(str::to_string));
        let field = if path == "." || path.is_empty() {
            "(record)".to_string()
        } else {
            path
        };
        InvalidContract::single(reference, &field, column_only(&error.into_inner()))
    })
}

/// The path of the first string (or key) holding a NUL character.
fn nul_field(value: &serde_json::Value, path: String) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "(record)".to_string()
        } else {
            path.clone()
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_field(item, format!("{path}[{index}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let nested = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(here())
            } else {
                nul_field(item, nested)
            }
        }),
        _ => None,
    }
}

/// serde_json's message, with its position as a column: a record is one line, so its
/// "line 1" would only contradict the file line number the problem is reported with.
fn column_only(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_chrono_writes_them_and_read_back() {
        let mut date = NaiveDate::from_ymd_opt(1899, 12, 25).unwrap();
        let last = NaiveDate::from_ymd_opt(2101, 1, 5).unwrap();
        while date <= last {
            let written = format_date(date);
            assert_eq!(written, date.format("%Y-%m-%d").to_string());
            assert_eq!(parse_date(&written), Some(date));
            date = date.succ_opt().unwrap();
        }
        for (year, month, day) in [(0, 1, 1), (9999, 12, 31), (10000, 1, 1), (-1, 6, 30)] {
            let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
            assert_eq!(format_date(date), date.format("%Y-%m-%d").to_string());
        }
    }

    fn parse(line: &str) -> Result<Contract, InvalidContract> {
        read_record(line).and_then(|record| {
            record.parse(&ParseDefaults {
                time_zone: chrono_tz::UTC,
            })
        })
    }

    #[test]
    fn a_nul_character_is_refused_naming_its_field() {
        let error = parse(
            r#"{"ref":"N-1","customer":"a\u0000b","start_date":"2025-01-01","cancellation_window":"end_of_month","auto_extend":false}"#,
        )
        .expect_err("NUL refused");
        assert_eq!(error.errors[0].field, "customer");
        let nested = parse(
            r#"{"ref":"N-2","customer":"c","start_date":"2025-01-01","cancellation_window":"end_of_month","auto_extend":false,"lines":[{"ref":"l","description":"x\u0000","kind":"one_time","billable":true,"start_date":"2025-01-01","amount_minor":1,"currency":"EUR"}]}"#,
        )
        .expect_err("NUL refused");
        assert_eq!(nested.errors[0].field, "lines[0].description");
    }

    #[test]
    fn a_cancelled_line_that_never_started_may_lie_after_an_early_end_date() {
        let line = r#"{"ref":"E-1","customer":"c","status":"expired","start_date":"2025-01-01","end_date":"2025-03-31","cancellation_window":"end_of_term","auto_extend":false,"lines":[{"ref":"later","kind":"one_time","billable":true,"start_date":"2025-06-01","end_date":"2025-06-01","status":"cancelled","amount_minor":1,"currency":"EUR"}]}"#;
        assert!(parse(line).is_ok());
        let active = line.replace(r#""status":"cancelled""#, r#""status":"active""#);
        let error = parse(&active).expect_err("an active line after the end is outside");
        assert_eq!(error.errors[0].field, "lines[0].start_date");
    }
}
