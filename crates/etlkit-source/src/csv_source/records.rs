//! Splitting CSV bytes into records with `csv-core`, keeping each record's exact physical start
//! line and byte range (so errors and rejects can quote the raw text).

use std::io::Read;

use csv_core::ReadRecordResult;

/// Parsing options shared by every file of a source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub(crate) delimiter: u8,
    pub(crate) quote: Option<u8>,
    pub(crate) escape: Option<u8>,
}

impl Dialect {
    fn core(&self) -> csv_core::Reader {
        let mut b = csv_core::ReaderBuilder::new();
        b.delimiter(self.delimiter).double_quote(true).escape(self.escape);
        match self.quote {
            Some(q) => b.quote(q).quoting(true),
            None => b.quoting(false),
        };
        b.build()
    }
}

/// A run of parsed records: unescaped field bytes plus, per record, its start line and byte range.
#[derive(Debug, Default)]
pub(crate) struct RecordChunk {
    /// Unescaped bytes of every field of every record, back to back (valid up to `fields_len`; the
    /// rest is scratch space kept between chunks).
    fields: Vec<u8>,
    fields_len: usize,
    /// End offset in `fields` of each field (valid up to `ends_len`).
    ends: Vec<usize>,
    ends_len: usize,
    /// Per record: index into `ends` one past its last field.
    record_ends: Vec<usize>,
    /// Per record: 1-based physical line where it starts.
    lines: Vec<u64>,
    /// Per record: its byte range in the file (terminator included). The raw text is read back from
    /// the file only for the few rows that need it (errors, rejects), so it costs no memory here.
    spans: Vec<(u64, u64)>,
}

impl RecordChunk {
    /// Empties the chunk, keeping its buffers for reuse.
    pub(crate) fn clear(&mut self) {
        self.fields_len = 0;
        self.ends_len = 0;
        self.record_ends.clear();
        self.lines.clear();
        self.spans.clear();
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.record_ends.len()
    }

    fn first_field(&self, row: usize) -> usize {
        if row == 0 { 0 } else { self.record_ends[row - 1] }
    }

    /// Number of fields of record `row`.
    pub(crate) fn field_count(&self, row: usize) -> usize {
        self.record_ends[row] - self.first_field(row)
    }

    /// Field `idx` of record `row` (must exist).
    #[inline]
    pub(crate) fn field(&self, row: usize, idx: usize) -> &[u8] {
        let k = self.first_field(row) + idx;
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.fields[start..self.ends[k]]
    }

    /// The 1-based physical line where record `row` starts.
    pub(crate) fn line(&self, row: usize) -> u64 {
        self.lines[row]
    }

    /// The physical line where field `idx` of record `row` starts (later than the record's line when
    /// an earlier quoted field spans lines).
    pub(crate) fn field_line(&self, row: usize, idx: usize) -> u64 {
        let before: usize = (0..idx.min(self.field_count(row)))
            .map(|i| memchr::memchr_iter(b'\n', self.field(row, i)).count())
            .sum();
        self.lines[row] + before as u64
    }

    /// The byte range of record `row` in its file, terminator included.
    pub(crate) fn span(&self, row: usize) -> (u64, u64) {
        self.spans[row]
    }
}

/// Reads the raw bytes of a record back from its file.
pub(crate) fn read_raw(path: &std::path::Path, (start, end): (u64, u64)) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0; (end - start) as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// A record's bytes without its line terminator (`\n`, `\r\n` or `\r`), otherwise untouched.
pub(crate) fn strip_terminator(mut raw: Vec<u8>) -> Vec<u8> {
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    raw
}

/// Reads records from one CSV byte stream.
pub(crate) struct RecordReader<R> {
    core: csv_core::Reader,
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    started: bool,
    finished: bool,
    /// Physical line (1-based) of `buf[pos]`.
    line: u64,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

const READ_BUF: usize = 1 << 20;

impl<R: Read> RecordReader<R> {
    pub(crate) fn new(src: R, dialect: Dialect) -> Self {
        RecordReader {
            core: dialect.core(),
            src,
            buf: vec![0; READ_BUF],
            pos: 0,
            len: 0,
            eof: false,
            started: false,
            finished: false,
            line: 1,
            buf_start: 0,
        }
    }

    /// Refills the buffer when it is used up.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.pos < self.len || self.eof {
            return Ok(());
        }
        self.buf_start += self.len as u64;
        self.pos = 0;
        self.len = 0;
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.len = n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !self.started {
            self.started = true;
            // A UTF-8 byte-order mark is not data (Excel and PowerShell write one).
            // Make sure a short first read still sees all three bytes.
            while self.len < 3 && !self.eof {
                let n = self.src.read(&mut self.buf[self.len..])?;
                if n == 0 {
                    self.eof = true;
                }
                self.len += n;
            }
            if self.buf[..self.len].starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
            }
        }
        Ok(())
    }

    /// Appends up to `max` records to `chunk`; returns how many were appended (0 at end of input).
    pub(crate) fn read_chunk(&mut self, chunk: &mut RecordChunk, max: usize) -> std::io::Result<usize> {
        let mut n = 0;
        while n < max && self.read_record(chunk)? {
            n += 1;
        }
        Ok(n)
    }

    /// Appends one record to `chunk`; false at end of input.
    pub(crate) fn read_record(&mut self, chunk: &mut RecordChunk) -> std::io::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        // Skip line terminators (blank lines, the `\n` of a CRLF) so the record's start line is exact.
        loop {
            self.fill()?;
            while self.pos < self.len && matches!(self.buf[self.pos], b'\n' | b'\r') {
                if self.buf[self.pos] == b'\n' {
                    self.line += 1;
                }
                self.pos += 1;
            }
            if self.pos < self.len || self.eof {
                break;
            }
        }
        let start_line = self.line;
        let out_start = chunk.fields_len;
        let mut out_len = out_start;
        let mut ends_len = chunk.ends_len;
        let start_offset = self.buf_start + self.pos as u64;
        loop {
            if chunk.fields.len() < out_len + 256 {
                let grow = chunk.fields.len().max(64 * 1024);
                chunk.fields.resize(chunk.fields.len() + grow, 0);
            }
            if chunk.ends.len() < ends_len + 16 {
                let grow = chunk.ends.len().max(4096);
                chunk.ends.resize(chunk.ends.len() + grow, 0);
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, nout, nend) =
                self.core.read_record(input, &mut chunk.fields[out_len..], &mut chunk.ends[ends_len..]);
            let consumed = &self.buf[self.pos..self.pos + nin];
            self.line += memchr::memchr_iter(b'\n', consumed).count() as u64;
            self.pos += nin;
            for e in &mut chunk.ends[ends_len..ends_len + nend] {
                *e += out_start;
            }
            out_len += nout;
            ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => self.fill()?,
                // Buffers are grown at the top of the loop.
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => {
                    chunk.fields_len = out_len;
                    chunk.ends_len = ends_len;
                    chunk.record_ends.push(ends_len);
                    chunk.lines.push(start_line);
                    chunk.spans.push((start_offset, self.buf_start + self.pos as u64));
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.finished = true;
                    return Ok(false);
                }
            }
        }
    }
}

/// Where an unterminated quoted field opens in `raw` (a record that ran into end of input), as a
/// number of lines after the record's first line; `None` when every quote is closed.
pub(crate) fn unterminated_quote(raw: &[u8], dialect: Dialect) -> Option<u64> {
    let quote = dialect.quote?;
    let (mut in_quotes, mut at_field_start, mut line, mut open_line) = (false, true, 0u64, 0u64);
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if in_quotes {
            if dialect.escape == Some(c) {
                i += 1;
            } else if c == quote {
                if raw.get(i + 1) == Some(&quote) {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if at_field_start && c == quote {
            in_quotes = true;
            open_line = line;
        }
        if c == b'\n' {
            line += 1;
        }
        at_field_start = !in_quotes && (c == dialect.delimiter || c == b'\n' || c == b'\r');
        i += 1;
    }
    in_quotes.then_some(open_line)
}
