//! The export record written straight from a [`Contract`]: the same JSON, field for field and
//! in the same order, as serialising [`ContractRecord::from_contract`], without first copying
//! every field of the contract into owned strings.
//!
//! Every event carries the contract's record after its change (the outbox), so a sweep writes
//! one per changed contract: through the owned copy that was about 8% of a SQLite sweep's
//! instructions, half of it the copy. [`ContractRecord`] stays the type that is read
//! (`deserialize`, then [`ContractRecord::parse`]) and the one to edit a record with; this is
//! only its writer. `tests/rules/export.rs` checks that both write the same text for a
//! generated population and for every optional part.
//!
//! [`ContractRecord`]: super::record::ContractRecord
//! [`ContractRecord::from_contract`]: super::record::ContractRecord::from_contract
//! [`ContractRecord::parse`]: super::record::ContractRecord::parse

use chrono::NaiveDate;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::{
    BillingDocument, BillingSchedule, Cancellation, ChangeRequest, Contract, LeadTimes, Line,
    Renewal, SentReminder,
};
use crate::contract::record::{date_digits, format_date};

/// A contract as its export record, borrowed: `serde_json::to_string(&ExportRecord(&c))`.
#[derive(Clone, Copy)]
pub struct ExportRecord<'a>(pub &'a Contract);

/// A date written `YYYY-MM-DD` without allocating (years outside 0–9999 through
/// [`format_date`]).
struct Day(NaiveDate);

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match date_digits(self.0) {
            // Ten ASCII digits and dashes: always UTF-8.
            Some(digits) => {
                serializer.serialize_str(std::str::from_utf8(&digits).unwrap_or_default())
            }
            None => serializer.serialize_str(&format_date(self.0)),
        }
    }
}

/// An optional date, `null` when absent.
fn day(date: Option<NaiveDate>) -> Option<Day> {
    date.map(Day)
}

/// A value written through its `Display` (periods), without an intermediate string.
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A list written element by element, each through the view the function makes of it.
struct List<'a, T, F>(&'a [T], F);

impl<'a, T, F, V> Serialize for List<'a, T, F>
where
    F: Fn(&'a T) -> V,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&(self.1)(item))?;
        }
        seq.end()
    }
}

impl<'a> Serialize for ExportRecord<'a> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c: &'a Contract = self.0;
        let reminders = &c.reminders;
        let mut fields = 24;
        fields += usize::from(reminders.lead_times.is_some());
        fields += usize::from(!reminders.sent.is_empty());
        fields += usize::from(reminders.next_on.is_some());
        let mut record = serializer.serialize_struct("ContractRecord", fields)?;
        record.serialize_field("ref", &c.reference)?;
        record.serialize_field("customer", &c.customer)?;
        record.serialize_field("status", c.status.as_str())?;
        record.serialize_field("time_zone", c.time_zone.name())?;
        record.serialize_field("start_date", &Day(c.start_date))?;
        record.serialize_field("end_date", &day(c.end_date))?;
        record.serialize_field("initial_term", &c.initial_term.map(Shown))?;
        record.serialize_field("original_end_date", &day(c.original_end_date))?;
        record.serialize_field("minimum_term_end", &day(c.minimum_term_end))?;
        record.serialize_field("notice_period", &Shown(c.notice_period))?;
        record.serialize_field("cancellation_window", c.cancellation_window.as_str())?;
        record.serialize_field("auto_extend", &c.auto_extend)?;
        record.serialize_field("extension_term", &c.extension_term.map(Shown))?;
        record.serialize_field("proration", c.proration.as_str())?;
        record.serialize_field("lines", &List(&c.lines, LineView))?;
        record.serialize_field("schedules", &List(&c.schedules, ScheduleView))?;
        record.serialize_field("documents", &List(&c.documents, DocumentView))?;
        record.serialize_field(
            "cancellation",
            &c.cancellation.as_ref().map(CancellationView),
        )?;
        record.serialize_field("end_reason", &c.end_reason)?;
        record.serialize_field("end_notes", &c.end_notes)?;
        record.serialize_field("cancellation_date", &day(c.cancellation_date))?;
        record.serialize_field("latest_cancellation_date", &day(c.latest_cancellation_date))?;
        record.serialize_field(
            "renewals",
            &List(&c.renewals, |renewal: &'a Renewal| {
                ReferenceView(&renewal.reference, renewal.status.as_str())
            }),
        )?;
        record.serialize_field(
            "change_requests",
            &List(&c.change_requests, |request: &'a ChangeRequest| {
                ReferenceView(&request.reference, request.status.as_str())
            }),
        )?;
        if let Some(lead_times) = &reminders.lead_times {
            record.serialize_field("reminder_lead_times", &LeadTimesView(lead_times))?;
        }
        if !reminders.sent.is_empty() {
            record.serialize_field("reminders_sent", &List(&reminders.sent, SentView))?;
        }
        if let Some(next_on) = reminders.next_on {
            record.serialize_field("next_reminder_on", &Day(next_on))?;
        }
        record.end()
    }
}

/// A contract line, borrowed.
struct LineView<'a>(&'a Line);

impl Serialize for LineView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let line = self.0;
        let mut record = serializer.serialize_struct("LineRecord", 12)?;
        record.serialize_field("ref", &line.reference)?;
        record.serialize_field("description", &line.description)?;
        record.serialize_field("kind", line.kind.as_str())?;
        record.serialize_field("billable", &line.billable)?;
        record.serialize_field("start_date", &Day(line.start_date))?;
        record.serialize_field("end_date", &day(line.end_date))?;
        record.serialize_field("status", line.status.as_str())?;
        record.serialize_field("amount_minor", &line.amount_minor)?;
        record.serialize_field("currency", &line.currency)?;
        record.serialize_field("billing_period", &line.billing_period.map(Shown))?;
        record.serialize_field("auto_extend", &line.auto_extend)?;
        record.serialize_field(
            "cancellation",
            &line.cancellation.as_ref().map(CancellationView),
        )?;
        record.end()
    }
}

/// A billing schedule, borrowed.
struct ScheduleView<'a>(&'a BillingSchedule);

impl Serialize for ScheduleView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let schedule = self.0;
        let mut record = serializer.serialize_struct("ScheduleRecord", 6)?;
        record.serialize_field("line_ref", &schedule.line_ref)?;
        record.serialize_field("period_start", &Day(schedule.period_start))?;
        record.serialize_field("period_end", &Day(schedule.period_end))?;
        record.serialize_field("amount_minor", &schedule.amount_minor)?;
        record.serialize_field("status", schedule.status.as_str())?;
        record.serialize_field("document", &schedule.document)?;
        record.end()
    }
}

/// A billing document, borrowed.
struct DocumentView<'a>(&'a BillingDocument);

impl Serialize for DocumentView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let document = self.0;
        let mut record = serializer.serialize_struct("DocumentRecord", 6)?;
        record.serialize_field("ref", &document.reference)?;
        record.serialize_field("kind", document.kind.as_str())?;
        record.serialize_field("status", document.status.as_str())?;
        record.serialize_field("consolidated", &document.consolidated)?;
        record.serialize_field("amount_minor", &document.amount_minor)?;
        record.serialize_field("currency", &document.currency)?;
        record.end()
    }
}

/// A pending cancellation, borrowed.
struct CancellationView<'a>(&'a Cancellation);

impl Serialize for CancellationView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let cancellation = self.0;
        let mut record = serializer.serialize_struct("CancellationRecord", 6)?;
        record.serialize_field("received_on", &Day(cancellation.received_on))?;
        record.serialize_field("end_date", &Day(cancellation.end_date))?;
        record.serialize_field("reason", &cancellation.reason)?;
        record.serialize_field("notes", &cancellation.notes)?;
        record.serialize_field("final_invoice", &cancellation.final_invoice)?;
        record.serialize_field("restore_auto_extend", &cancellation.restore_auto_extend)?;
        record.end()
    }
}

/// A reference with its status (renewals and change requests).
struct ReferenceView<'a>(&'a str, &'a str);

impl Serialize for ReferenceView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut record = serializer.serialize_struct("ReferenceRecord", 2)?;
        record.serialize_field("ref", self.0)?;
        record.serialize_field("status", self.1)?;
        record.end()
    }
}

/// A contract's own lead times.
struct LeadTimesView<'a>(&'a LeadTimes);

impl Serialize for LeadTimesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(Shown))
    }
}

/// A reminder that was sent, borrowed.
struct SentView<'a>(&'a SentReminder);

impl Serialize for SentView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sent = self.0;
        let mut record = serializer.serialize_struct("SentReminderRecord", 3)?;
        record.serialize_field("kind", sent.kind.as_str())?;
        record.serialize_field("date", &Day(sent.date))?;
        record.serialize_field("lead_time", &Shown(sent.lead_time))?;
        record.end()
    }
}
