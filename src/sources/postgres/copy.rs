//! PostgreSQL's binary `COPY` format, read chunk by chunk: the rows of a
//! scan as the server streams them (`COPY (..) TO STDOUT (FORMAT binary)`),
//! without a row object per row.
//!
//! The format: an 11-byte signature, a 32-bit flags field and a header
//! extension (its 32-bit length, then that many bytes); then each row as a
//! 16-bit field count and, per field, a 32-bit length (-1 for NULL) and the
//! value in the type's binary form (what a binary query result holds); then
//! a field count of -1. The server sends one row per message, but nothing
//! here relies on it: a row split across chunks is carried over.

use thiserror::Error;

/// Values kept from a row: the agent id, the heartbeat time, the status and
/// the details. Further columns are read past.
pub(super) const KEPT: usize = 4;

/// The first [`KEPT`] values of a row (`None` for NULL or a missing
/// column).
pub(super) type Values<'a> = [Option<&'a [u8]>; KEPT];

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Flags bit 16: OIDs included (never asked for, so never expected).
#[cfg(test)]
const HAS_OIDS: u32 = 1 << 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub(super) enum CopyError {
    #[error("the COPY data does not start with the binary signature")]
    Signature,
    #[error("the COPY data has an unsupported header (flags {0:#x})")]
    Flags(u32),
    #[error("a COPY row has {got} column(s) where the query described {want}")]
    Columns { got: usize, want: usize },
    #[error("a COPY row has a negative column count ({0})")]
    Count(i16),
    #[error("a COPY value has a negative length ({0})")]
    Length(i32),
    #[error("the COPY data ended in the middle of a row")]
    Truncated,
    #[error("the COPY data goes on after its end marker")]
    AfterEnd,
}

/// What went wrong in [`CopyParser::feed`]: the data, or the caller's
/// handling of a row.
#[derive(Debug)]
pub(super) enum FeedError<E> {
    Copy(CopyError),
    Row(E),
}

impl<E> From<CopyError> for FeedError<E> {
    fn from(e: CopyError) -> Self {
        FeedError::Copy(e)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Header,
    Rows,
    Ended,
}

/// A binary `COPY` stream of rows of `columns` columns, parsed as it comes.
pub(super) struct CopyParser {
    columns: usize,
    state: State,
    /// The start of a row (or of the header) whose end has not come yet.
    carry: Vec<u8>,
}

impl CopyParser {
    pub(super) fn new(columns: usize) -> Self {
        Self {
            columns,
            state: State::Header,
            carry: Vec::new(),
        }
    }

    /// Parse `chunk`, calling `row` with each complete row's values.
    /// Returns the number of rows in it.
    pub(super) fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&Values<'_>) -> Result<(), E>,
    ) -> Result<usize, FeedError<E>> {
        if self.carry.is_empty() {
            let (rows, used) = self.parse(chunk, &mut row)?;
            self.carry.extend_from_slice(&chunk[used..]);
            Ok(rows)
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            let (rows, used) = self.parse(&data, &mut row)?;
            data.drain(..used);
            self.carry = data;
            Ok(rows)
        }
    }

    /// The stream ended: it must have ended with its end marker.
    pub(super) fn finish(&self) -> Result<(), CopyError> {
        if self.state == State::Ended && self.carry.is_empty() {
            Ok(())
        } else {
            Err(CopyError::Truncated)
        }
    }

    /// Complete rows from the start of `data`; returns how many and the
    /// bytes they (and the header) took.
    fn parse<E>(
        &mut self,
        data: &[u8],
        row: &mut impl FnMut(&Values<'_>) -> Result<(), E>,
    ) -> Result<(usize, usize), FeedError<E>> {
        let mut at = 0usize;
        if self.state == State::Header {
            match header(data)? {
                Some(len) => {
                    at = len;
                    self.state = State::Rows;
                }
                None => return Ok((0, 0)),
            }
        }
        let mut rows = 0usize;
        while at < data.len() {
            if self.state == State::Ended {
                return Err(CopyError::AfterEnd.into());
            }
            let Some((values, len)) = self.row(&data[at..])? else {
                break;
            };
            at += len;
            match values {
                Some(values) => {
                    row(&values).map_err(FeedError::Row)?;
                    rows += 1;
                }
                None => self.state = State::Ended,
            }
        }
        Ok((rows, at))
    }

    /// The row at the start of `data` and its length; `None` if it is not
    /// all there yet. The values are `None` for the end marker.
    #[allow(clippy::type_complexity)]
    fn row<'d>(&self, data: &'d [u8]) -> Result<Option<(Option<Values<'d>>, usize)>, CopyError> {
        let Some(count) = be_i16(data, 0) else {
            return Ok(None);
        };
        if count == -1 {
            return Ok(Some((None, 2)));
        }
        let count = usize::try_from(count).map_err(|_| CopyError::Count(count))?;
        if count != self.columns {
            return Err(CopyError::Columns {
                got: count,
                want: self.columns,
            });
        }
        let mut values: Values<'d> = [None; KEPT];
        let mut at = 2usize;
        for i in 0..count {
            let Some(len) = be_i32(data, at) else {
                return Ok(None);
            };
            at += 4;
            if len == -1 {
                continue;
            }
            let len = usize::try_from(len).map_err(|_| CopyError::Length(len))?;
            let Some(value) = data.get(at..at + len) else {
                return Ok(None);
            };
            if let Some(slot) = values.get_mut(i) {
                *slot = Some(value);
            }
            at += len;
        }
        Ok(Some((Some(values), at)))
    }
}

/// The header's length, once it is all in `data`.
fn header(data: &[u8]) -> Result<Option<usize>, CopyError> {
    let fixed = SIGNATURE.len() + 8;
    if data.len() < SIGNATURE.len() {
        return if SIGNATURE.starts_with(data) {
            Ok(None)
        } else {
            Err(CopyError::Signature)
        };
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err(CopyError::Signature);
    }
    let (Some(flags), Some(ext)) = (be_i32(data, 11), be_i32(data, 15)) else {
        return Ok(None);
    };
    let flags = flags as u32;
    // Bits 16-31 change the format (bit 16: OIDs included, which is never
    // asked for); a reader must refuse what it does not know. Bits 0-15 are
    // compatible changes, to be ignored.
    if flags >> 16 != 0 {
        return Err(CopyError::Flags(flags));
    }
    let ext = usize::try_from(ext).map_err(|_| CopyError::Length(ext))?;
    Ok((data.len() >= fixed + ext).then_some(fixed + ext))
}

fn be_i16(data: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(data: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes() -> Vec<u8> {
        let mut b = SIGNATURE.to_vec();
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b
    }

    fn row_bytes(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b
    }

    const END: [u8; 2] = (-1i16).to_be_bytes();

    /// Every row of `chunks` fed in order, as owned values.
    fn rows_of(columns: usize, chunks: &[&[u8]]) -> Result<Vec<Vec<Option<Vec<u8>>>>, CopyError> {
        let mut p = CopyParser::new(columns);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |v: &Values<'_>| {
                out.push(v.iter().map(|x| x.map(<[u8]>::to_vec)).collect());
                Ok::<(), ()>(())
            })
            .map_err(|e| match e {
                FeedError::Copy(e) => e,
                FeedError::Row(()) => unreachable!(),
            })?;
        }
        p.finish()?;
        Ok(out)
    }

    fn stream() -> Vec<u8> {
        let mut all = header_bytes();
        all.extend(row_bytes(&[
            Some(b"agent-1"),
            Some(&[0, 0, 0, 0, 0, 0, 0, 1]),
        ]));
        all.extend(row_bytes(&[Some(b""), None]));
        all.extend(row_bytes(&[Some(b"agent-3"), Some(&[9; 8])]));
        all.extend_from_slice(&END);
        all
    }

    #[test]
    fn rows_are_read_whatever_the_chunking() {
        let all = stream();
        let whole = rows_of(2, &[&all]).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0][0].as_deref(), Some(&b"agent-1"[..]));
        assert_eq!(whole[1][0].as_deref(), Some(&b""[..]), "empty is not NULL");
        assert_eq!(whole[1][1], None, "NULL");
        assert_eq!(whole[2][1].as_deref(), Some(&[9u8; 8][..]));
        assert_eq!(whole[0][2], None, "a missing column is None");
        // Every split point, and byte by byte.
        for cut in 0..=all.len() {
            let (a, b) = all.split_at(cut);
            assert_eq!(rows_of(2, &[a, b]).unwrap(), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(rows_of(2, &bytes).unwrap(), whole);
    }

    #[test]
    fn columns_past_the_kept_ones_are_read_past() {
        let mut all = header_bytes();
        let six: Vec<Option<&[u8]>> = vec![
            Some(b"a"),
            Some(b"t"),
            Some(b"ok"),
            None,
            Some(b"extra"),
            Some(b"more"),
        ];
        all.extend(row_bytes(&six));
        all.extend(row_bytes(&six));
        all.extend_from_slice(&END);
        let rows = rows_of(6, &[&all]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1][2].as_deref(), Some(&b"ok"[..]));
        assert_eq!(rows[1].len(), KEPT);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        let all = stream();
        // Cut short: no end marker, or in the middle of a row.
        assert_eq!(
            rows_of(2, &[&all[..all.len() - 2]]),
            Err(CopyError::Truncated)
        );
        assert_eq!(rows_of(2, &[&all[..30]]), Err(CopyError::Truncated));
        assert_eq!(rows_of(2, &[b"PGCOPX"]), Err(CopyError::Signature));
        assert_eq!(
            rows_of(2, &[b"hello world, not copy"]),
            Err(CopyError::Signature)
        );
        assert_eq!(
            rows_of(3, &[&all]),
            Err(CopyError::Columns { got: 2, want: 3 })
        );
        let mut oids = SIGNATURE.to_vec();
        oids.extend_from_slice(&(HAS_OIDS as i32).to_be_bytes());
        oids.extend_from_slice(&0i32.to_be_bytes());
        assert!(matches!(rows_of(2, &[&oids]), Err(CopyError::Flags(_))));
        let mut minus = header_bytes();
        minus.extend_from_slice(&(-2i16).to_be_bytes());
        assert_eq!(rows_of(2, &[&minus]), Err(CopyError::Count(-2)));
        let mut negative = header_bytes();
        negative.extend_from_slice(&2i16.to_be_bytes());
        negative.extend_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(rows_of(2, &[&negative]), Err(CopyError::Length(-7)));
        let mut after = all.clone();
        after.extend(row_bytes(&[Some(b"late"), None]));
        assert_eq!(rows_of(2, &[&after]), Err(CopyError::AfterEnd));
        // A length past the data is a row not all there yet, not a panic.
        let mut huge = header_bytes();
        huge.extend_from_slice(&2i16.to_be_bytes());
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(rows_of(2, &[&huge]), Err(CopyError::Truncated));
    }

    #[test]
    fn a_header_extension_and_compatible_flags_are_skipped() {
        let mut all = SIGNATURE.to_vec();
        all.extend_from_slice(&0x0001i32.to_be_bytes());
        all.extend_from_slice(&3i32.to_be_bytes());
        all.extend_from_slice(b"xyz");
        all.extend(row_bytes(&[Some(b"a"), None]));
        all.extend_from_slice(&END);
        assert_eq!(rows_of(2, &[&all]).unwrap().len(), 1);
    }
}
