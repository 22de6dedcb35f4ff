//! [`Origins`]: where each row of a batch came from (file and 1-based line, or source and 1-based row
//! number), carried beside the batch from the source through the transforms to the sink so that every
//! error and every reject can name the original input row.
//!
//! The pipeline keeps origins up to date on its own for splitting and coalescing, and for transforms
//! that return one batch with as many rows as they got (the common 1:1 case). A transform that drops,
//! reorders or multiplies rows says how with [`Context::keep_rows`](crate::Context::keep_rows) or
//! [`Context::take_rows`](crate::Context::take_rows); without that, its output rows are numbered within
//! the transform's own output.

use std::fmt;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray};

/// Where one row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOrigin<'a> {
    /// The file path, or the name of the source or stage that numbered the row.
    pub source: &'a str,
    /// The 1-based physical line for text files (the header is line 1), else the 1-based row number.
    pub line: u64,
}

impl fmt::Display for RowOrigin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// The origins of the rows of one batch: for row `i`, a source name and a line (or row) number.
///
/// ```
/// use etlkit_core::Origins;
/// let a = Origins::lines("a.csv", [2, 3, 5]);
/// let b = Origins::sequential("memory", 1, 2);
/// let both = Origins::concat(&[a, b]);
/// assert_eq!(both.get(2).unwrap().to_string(), "a.csv:5");
/// assert_eq!(both.get(4).unwrap().to_string(), "memory:2");
/// assert_eq!(both.slice(1, 3).take(&[2, 0]).get(0).unwrap().to_string(), "memory:1");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Distinct sources, referred to by index from `runs`.
    sources: Vec<Arc<str>>,
    /// `(first row in this batch, source index)`, sorted by first row; the run lasts until the next.
    runs: Vec<(usize, usize)>,
    /// One line (or row) number per row.
    lines: Vec<u64>,
}

impl fmt::Debug for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.get(0).map(|o| o.to_string());
        f.debug_struct("Origins").field("rows", &self.len()).field("first", &first).finish()
    }
}

impl Origins {
    /// Rows of `source` with the given line numbers.
    pub fn lines(source: impl Into<Arc<str>>, lines: impl IntoIterator<Item = u64>) -> Self {
        let lines: Vec<u64> = lines.into_iter().collect();
        let runs = if lines.is_empty() { Vec::new() } else { vec![(0, 0)] };
        Origins { sources: vec![source.into()], runs, lines }
    }

    /// `len` rows of `source` numbered `first`, `first + 1`, ...
    pub fn sequential(source: impl Into<Arc<str>>, first: u64, len: usize) -> Self {
        Self::lines(source, first..first + len as u64)
    }

    /// Rows described.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The origin of row `row`.
    pub fn get(&self, row: usize) -> Option<RowOrigin<'_>> {
        let line = *self.lines.get(row)?;
        let run = self.runs.partition_point(|&(start, _)| start <= row).checked_sub(1)?;
        Some(RowOrigin { source: &self.sources[self.runs[run].1], line })
    }

    /// The origins of rows `offset .. offset + len`.
    pub fn slice(&self, offset: usize, len: usize) -> Self {
        self.take_iter((offset..offset + len).filter(|&i| i < self.len()))
    }

    /// The origins of the rows `indices` point at, in that order.
    pub fn take(&self, indices: &[usize]) -> Self {
        self.take_iter(indices.iter().copied())
    }

    /// The origins of the rows `keep` selects (NULL counts as not selected), as
    /// `arrow_select::filter` keeps them.
    pub fn filter(&self, keep: &BooleanArray) -> Self {
        self.take_iter((0..keep.len()).filter(|&i| keep.is_valid(i) && keep.value(i)))
    }

    /// The origins of several batches concatenated in order.
    pub fn concat(parts: &[Origins]) -> Self {
        let mut out = Origins {
            sources: Vec::new(),
            runs: Vec::new(),
            lines: Vec::with_capacity(parts.iter().map(Origins::len).sum()),
        };
        for p in parts {
            for (r, &(start, src)) in p.runs.iter().enumerate() {
                let end = p.runs.get(r + 1).map_or(p.lines.len(), |&(next, _)| next);
                let src = out.source_id(&p.sources[src]);
                if out.runs.last().is_none_or(|&(_, s)| s != src) {
                    out.runs.push((out.lines.len(), src));
                }
                out.lines.extend_from_slice(&p.lines[start..end]);
            }
        }
        out
    }

    fn take_iter(&self, rows: impl Iterator<Item = usize>) -> Self {
        let mut out = Origins { sources: self.sources.clone(), runs: Vec::new(), lines: Vec::new() };
        // The run of the previous row: rows mostly come in order, so look-ups are rare.
        let (mut lo, mut hi, mut src) = (0, 0, 0);
        for i in rows {
            let Some(&line) = self.lines.get(i) else { continue };
            if !(lo..hi).contains(&i) {
                let r = self.runs.partition_point(|&(start, _)| start <= i) - 1;
                lo = self.runs[r].0;
                hi = self.runs.get(r + 1).map_or(self.lines.len(), |&(next, _)| next);
                src = self.runs[r].1;
            }
            if out.runs.last().is_none_or(|&(_, s)| s != src) {
                out.runs.push((out.lines.len(), src));
            }
            out.lines.push(line);
        }
        out
    }

    fn source_id(&mut self, source: &Arc<str>) -> usize {
        match self.sources.iter().position(|s| Arc::ptr_eq(s, source) || s == source) {
            Some(i) => i,
            None => {
                self.sources.push(source.clone());
                self.sources.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_filtering_and_concatenating_keep_each_row_with_its_file_and_line() {
        let a = Origins::lines("a.csv", [2, 3, 4, 6]);
        let b = Origins::lines("b.csv", [2, 3]);
        let all = Origins::concat(&[a.clone(), b]);
        assert_eq!(all.len(), 6);
        let shown: Vec<String> = (0..6).map(|i| all.get(i).unwrap().to_string()).collect();
        assert_eq!(shown, ["a.csv:2", "a.csv:3", "a.csv:4", "a.csv:6", "b.csv:2", "b.csv:3"]);
        let kept = all.filter(&BooleanArray::from(vec![
            Some(false),
            None,
            Some(true),
            Some(false),
            Some(true),
            Some(false),
        ]));
        assert_eq!(kept.get(0).unwrap().to_string(), "a.csv:4");
        assert_eq!(kept.get(1).unwrap().to_string(), "b.csv:2");
        assert_eq!(kept.get(2), None);
        let sliced = all.slice(3, 2);
        assert_eq!(
            (sliced.get(0).unwrap().to_string(), sliced.get(1).unwrap().to_string()),
            ("a.csv:6".into(), "b.csv:2".into())
        );
        assert_eq!(all.take(&[5, 0]).get(0).unwrap().to_string(), "b.csv:3");
        assert!(Origins::default().get(0).is_none());
    }
}
