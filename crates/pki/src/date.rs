//! How veer-pki writes a certificate's dates for people: one UTC form, in errors as in `veer pki inspect`.

use time::OffsetDateTime;

/// `2035-01-31 12:00:00 UTC`.
pub(crate) fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}
