//! How an event's contract record is stored (`contract_events.contract_record`): the export
//! record's JSON, compressed with LZ4 against a fixed dictionary, behind a one-byte format tag.
//!
//! Every event carries the contract's export record after its change, about 680 bytes of JSON
//! per changed contract. At 1,000,000 contracts that was 200 MB more table and as much again of
//! WAL per sweep, which neither database compresses (PostgreSQL only compresses values of
//! about 2 kB and more). The records are alike: the same keys in the same order, the same
//! handful of values. LZ4 with a dictionary that holds those keys and values stores them in
//! about 150 bytes; compressing costs the sweep less than writing the bytes it saves
//! (`docs/benchmarks.md`, "The record packed").
//!
//! The stored value is one of:
//! - `{…}`: the record as JSON text. Rows written before migration 0007 are read as they are.
//! - [`LZ4_V1`], then the JSON's length as a little-endian `u32`, then the LZ4 block of the
//!   JSON compressed against [`DICTIONARY_V1`].
//!
//! **Architecture invariant:** a tag, once written, is read the same way forever: the
//! dictionary of [`LZ4_V1`] never changes (a better one gets a new tag). The unit test
//! `a_record_packed_when_the_tag_was_made_still_unpacks` decodes bytes written the day it was
//! made, and fails if the dictionary is edited.

use crate::contract::export::ExportRecord;
use crate::contract::Contract;

/// The tag of a record compressed with LZ4 against [`DICTIONARY_V1`], length-prefixed.
pub(crate) const LZ4_V1: u8 = 1;

/// The first byte of a record stored as plain JSON text.
const PLAIN_JSON: u8 = b'{';

/// The largest record unpacked: far above any real contract's (a contract with a thousand
/// lines and schedules is a few hundred kB), so that a corrupted length cannot make the reader
/// allocate gigabytes.
const MAX_RECORD_BYTES: usize = 64 << 20;

/// What the records of [`LZ4_V1`] are compressed against: the keys of every part of an export
/// record in the order they are written, with the values most records share. Fixed for ever
/// (see the module's invariant).
const DICTIONARY_V1: &[u8] = br#"{"ref":"L-1","description":null,"kind":"recurring_fixed","billable":true,"start_date":"2025-01-01","end_date":null,"status":"active","amount_minor":0,"currency":"EUR","billing_period":"1M","auto_extend":true,"cancellation":null},{"line_ref":"L-1","period_start":"2025-01-01","period_end":"2025-01-31","amount_minor":0,"status":"planned","document":null},{"ref":"INV-1","kind":"invoice","status":"draft","consolidated":false,"amount_minor":0,"currency":"USD"},{"received_on":"2025-01-01","end_date":"2025-12-31","reason":null,"notes":null,"final_invoice":false,"restore_auto_extend":false},"reminder_lead_times":["30D","7D"],"reminders_sent":[{"kind":"deadline_approaching","date":"2025-11-30","lead_time":"30D"},{"kind":"end_approaching"}],"next_reminder_on":"2025-11-23","recurring_usage","one_time","credit_note","billed","ready_for_review","complete","approved","pending","applied","cancellation_window":"end_of_year","auto_extend":false,"extension_term":null,"status":"cancelled","end_of_term","status":"expired","proration":"none","Europe/","America/","Asia/","Australia/",
{"ref":"C-0000","customer":"Customer 0","status":"active","time_zone":"Europe/Berlin","start_date":"2025-01-01","end_date":null,"initial_term":"12M","original_end_date":null,"minimum_term_end":null,"notice_period":"1M","cancellation_window":"end_of_term","auto_extend":true,"extension_term":"12M","proration":"actual_days","lines":[],"schedules":[],"documents":[],"cancellation":null,"end_reason":null,"end_notes":null,"cancellation_date":"2025-12-31","latest_cancellation_date":"2025-11-30","renewals":[],"change_requests":[]}"#;

/// Why a stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnpackError {
    /// The value is empty.
    #[error("empty")]
    Empty,
    /// The first byte is no tag this version knows.
    #[error("unknown format tag {0}")]
    UnknownTag(u8),
    /// The length prefix is missing or claims more than [`MAX_RECORD_BYTES`].
    #[error("bad length prefix")]
    Length,
    /// The compressed block does not decompress to its length.
    #[error("corrupt LZ4 block: {0}")]
    Corrupt(String),
    /// What came out is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
}

/// The contract's export record, packed for storage ([`LZ4_V1`]); serialised and compressed
/// once per change, shared by its events. `buffer` is scratch space kept between calls.
pub(crate) fn pack_record(contract: &Contract, buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    buffer.clear();
    // A record is plain data with string keys: serialising it cannot fail. Were it ever to,
    // the event is still recorded, without a snapshot (as events older than the outbox).
    serde_json::to_writer(&mut *buffer, &ExportRecord(contract)).ok()?;
    Some(pack(buffer))
}

/// `json` packed as [`LZ4_V1`], or kept as plain JSON text when it cannot be (too long for
/// the reader, or the compressor failed): either reads back the same.
fn pack(json: &[u8]) -> Vec<u8> {
    // A record longer than the reader unpacks is kept as plain text: it reads back either way.
    let Some(length) = u32::try_from(json.len())
        .ok()
        .filter(|_| json.len() <= MAX_RECORD_BYTES)
    else {
        return json.to_vec();
    };
    let mut packed = vec![0; 5 + lz4_flex::block::get_maximum_output_size(json.len())];
    packed[0] = LZ4_V1;
    packed[1..5].copy_from_slice(&length.to_le_bytes());
    // The output is sized for the worst case, so compression cannot run out of room; were it
    // ever to fail, the record is stored as its plain JSON text, which reads back the same.
    match lz4_flex::block::compress_into_with_dict(json, &mut packed[5..], DICTIONARY_V1) {
        Ok(written) => {
            packed.truncate(5 + written);
            packed
        }
        Err(_) => json.to_vec(),
    }
}

/// The record's JSON text from its stored value, whichever format it was stored in.
pub(crate) fn unpack_record(stored: Vec<u8>) -> Result<String, UnpackError> {
    let json = match stored.first() {
        None => return Err(UnpackError::Empty),
        Some(&PLAIN_JSON) => stored,
        Some(&LZ4_V1) => {
            let length = stored
                .get(1..5)
                .and_then(|prefix| <[u8; 4]>::try_from(prefix).ok())
                .map(|prefix| u32::from_le_bytes(prefix) as usize)
                .filter(|&length| length <= MAX_RECORD_BYTES)
                .ok_or(UnpackError::Length)?;
            let mut json = vec![0; length];
            let written =
                lz4_flex::block::decompress_into_with_dict(&stored[5..], &mut json, DICTIONARY_V1)
                    .map_err(|error| UnpackError::Corrupt(error.to_string()))?;
            if written != length {
                return Err(UnpackError::Corrupt(format!(
                    "{written} bytes where the prefix says {length}"
                )));
            }
            json
        }
        Some(&other) => return Err(UnpackError::UnknownTag(other)),
    };
    String::from_utf8(json).map_err(|_| UnpackError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of the benchmark's population, as its events carried it.
    const RECORD: &str = r#"{"ref":"BENCH-00000793","customer":"Customer 136179","status":"active","time_zone":"America/Chicago","start_date":"2024-07-25","end_date":"2027-07-24","initial_term":null,"original_end_date":null,"minimum_term_end":null,"notice_period":"2W","cancellation_window":"end_of_term","auto_extend":true,"extension_term":"1M","proration":"actual_days","lines":[],"schedules":[],"documents":[],"cancellation":null,"end_reason":null,"end_notes":null,"cancellation_date":"2027-07-24","latest_cancellation_date":"2027-07-10","renewals":[],"change_requests":[]}"#;

    #[test]
    fn a_record_round_trips_and_shrinks() {
        let packed = pack(RECORD.as_bytes());
        assert_eq!(packed[0], LZ4_V1);
        assert!(
            packed.len() * 3 < RECORD.len(),
            "{} bytes packed from {}",
            packed.len(),
            RECORD.len()
        );
        assert_eq!(unpack_record(packed).as_deref(), Ok(RECORD));
    }

    #[test]
    fn a_record_packed_when_the_tag_was_made_still_unpacks() {
        // RECORD packed on 2026-12-08, when LZ4_V1 and its dictionary were made.
        let packed = decode_hex(PACKED_ON_2026_12_08);
        assert_eq!(unpack_record(packed).as_deref(), Ok(RECORD));
    }

    #[test]
    fn plain_json_text_is_read_as_it_is() {
        assert_eq!(
            unpack_record(RECORD.as_bytes().to_vec()).as_deref(),
            Ok(RECORD)
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        assert_eq!(unpack_record(Vec::new()), Err(UnpackError::Empty));
        assert_eq!(
            unpack_record(vec![7, 1, 2]),
            Err(UnpackError::UnknownTag(7))
        );
        assert_eq!(unpack_record(vec![LZ4_V1, 1]), Err(UnpackError::Length));
        assert_eq!(
            unpack_record(vec![LZ4_V1, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(UnpackError::Length)
        );
        let mut packed = pack(RECORD.as_bytes());
        // Every truncation and every single-byte change: an error or other text, never a panic.
        for end in 0..packed.len() {
            let _ = unpack_record(packed[..end].to_vec());
        }
        for at in 5..packed.len() {
            packed[at] ^= 0x5a;
            let _ = unpack_record(packed.clone());
            packed[at] ^= 0x5a;
        }
        let mut longer = pack(RECORD.as_bytes());
        longer[1..5].copy_from_slice(&(RECORD.len() as u32 + 1).to_le_bytes());
        assert!(matches!(
            unpack_record(longer),
            Err(UnpackError::Corrupt(_))
        ));
    }

    fn decode_hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    /// Written by the reference LZ4 library (python-lz4 4.x, `lz4.block.compress` with this
    /// dictionary), so the test also shows the format is plain LZ4 any implementation reads.
    const PACKED_ON_2026_12_08: &str = concat!(
        "0124020000040f02ef42454e43482d3030303030373933170204683133363137399502050806081c02f20041",
        "6d65726963612f4368696361676f3000091e0291342d30372d3235222c9d0106e200113718002c3422260202",
        "28010f25022e2f32572502390f2402820642010f24020b0128001f3124020e50223a5b5d7d",
    );
}
