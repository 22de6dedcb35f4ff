//! Column-at-a-time encoding of binary COPY tuples for the common scalar types.
//!
//! [`ColumnarEncoder`] handles conformed batches whose every column is a boolean, an integer, a
//! float, a `date`, a microsecond `timestamp`/`timestamptz`, `text` or `bytea` (and `uuid` as 16
//! bytes). It first sizes every row (so the output is allocated once and each column's values land
//! at known offsets), then writes one column at a time in a tight, monomorphic loop. Batches with
//! any other column type (`numeric`, `time`, arrays, `json`/`jsonb`, ...) are encoded by `pgpq`
//! instead (see [`TupleEncoder`](crate::copy::TupleEncoder)); the two produce byte-identical data
//! for the types both handle (tested below). Measured about 3x faster than `pgpq` on the taxi
//! rows (`cargo bench --bench postgres -- pg_encode`, docs/benchmarks.md).
//!
//! Wire format per row: a 16-bit field count, then per field a 32-bit byte length (`-1` for NULL)
//! and the value in PostgreSQL's binary send format (big-endian; timestamps in microseconds and
//! dates in days since 2000-01-01).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use std::ops::Range;

use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Schema, TimeUnit};
use bytes::BytesMut;

use crate::catalog::PgType;
use crate::error::{PgError, Result};

/// Microseconds from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
/// The length word of a NULL field.
const NULL: [u8; 4] = (-1i32).to_be_bytes();
/// Rows encoded per block: small enough for a block's output (~250 bytes a taxi row) to stay in
/// the CPU cache while it is written column by column.
const BLOCK_ROWS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    TimestampUs,
    Date,
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    LargeBinary,
    FixedBinary(usize),
}

impl Kind {
    /// The kind for a conformed column: its PostgreSQL type and the Arrow type it was cast to.
    fn of(pg: &PgType, dt: &DataType) -> Option<Kind> {
        use DataType as D;
        Some(match (pg, dt) {
            (PgType::Bool, D::Boolean) => Kind::Bool,
            (PgType::Int2, D::Int16) => Kind::I16,
            (PgType::Int4, D::Int32) => Kind::I32,
            (PgType::Int8, D::Int64) => Kind::I64,
            (PgType::Float4, D::Float32) => Kind::F32,
            (PgType::Float8, D::Float64) => Kind::F64,
            (PgType::Timestamp | PgType::Timestamptz, D::Timestamp(TimeUnit::Microsecond, _)) => {
                Kind::TimestampUs
            }
            (PgType::Date, D::Date32) => Kind::Date,
            (PgType::Text, D::Utf8) => Kind::Utf8,
            (PgType::Text, D::LargeUtf8) => Kind::LargeUtf8,
            (PgType::Text, D::Utf8View) => Kind::Utf8View,
            (PgType::Bytea, D::Binary) => Kind::Binary,
            (PgType::Bytea, D::LargeBinary) => Kind::LargeBinary,
            (PgType::Bytea, D::FixedSizeBinary(w)) | (PgType::Uuid, D::FixedSizeBinary(w @ 16)) => {
                Kind::FixedBinary(usize::try_from(*w).ok()?)
            }
            _ => return None,
        })
    }

    /// Payload bytes of a non-NULL value of a fixed-width kind.
    fn width(self) -> Option<usize> {
        Some(match self {
            Kind::Bool => 1,
            Kind::I16 => 2,
            Kind::I32 | Kind::F32 | Kind::Date => 4,
            Kind::I64 | Kind::F64 | Kind::TimestampUs => 8,
            Kind::FixedBinary(w) => w,
            Kind::Utf8 | Kind::LargeUtf8 | Kind::Utf8View | Kind::Binary | Kind::LargeBinary => return None,
        })
    }
}

/// Encodes conformed batches of scalar columns to binary COPY tuples, one column at a time.
#[derive(Debug, Clone)]
pub(crate) struct ColumnarEncoder {
    kinds: Vec<Kind>,
    names: Vec<String>,
    /// Bytes of a row without NULLs in variable-width columns' payloads: the field count, every
    /// length word and every fixed-width value.
    fixed_row_bytes: usize,
}

impl ColumnarEncoder {
    /// An encoder for batches of `schema` going into columns of types `pg` (same order), or `None`
    /// when some column is not one of the types this encoder handles.
    pub(crate) fn new(pg: &[PgType], schema: &Schema) -> Option<Self> {
        if pg.len() != schema.fields().len() || pg.len() > i16::MAX as usize {
            return None;
        }
        let kinds = pg
            .iter()
            .zip(schema.fields())
            .map(|(p, f)| Kind::of(p, f.data_type()))
            .collect::<Option<Vec<_>>>()?;
        let fixed_row_bytes = 2 + kinds.iter().map(|k| 4 + k.width().unwrap_or(0)).sum::<usize>();
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Some(ColumnarEncoder { kinds, names, fixed_row_bytes })
    }

    /// Appends the tuples of `batch` to `buf`. `first_row` (1-based) numbers rows in errors.
    pub(crate) fn encode(&self, batch: &RecordBatch, buf: &mut BytesMut, first_row: u64) -> Result<()> {
        if batch.num_columns() != self.kinds.len() {
            return Err(PgError::UnsupportedType {
                column: "*".into(),
                reason: format!(
                    "batch has {} columns, the encoder {}",
                    batch.num_columns(),
                    self.kinds.len()
                ),
            });
        }
        let nulls: Vec<Option<NullBuffer>> =
            batch.columns().iter().map(|c| c.logical_nulls().filter(|n| n.null_count() > 0)).collect();
        let mut cursor = Vec::with_capacity(BLOCK_ROWS.min(batch.num_rows()));
        let mut start = 0;
        while start < batch.num_rows() {
            let rows = start..(start + BLOCK_ROWS).min(batch.num_rows());
            self.encode_block(batch, &nulls, rows, buf, &mut cursor)
                .map_err(|(column, row)| self.out_of_range(batch, column, row, first_row))?;
            start += BLOCK_ROWS;
        }
        Ok(())
    }

    /// Encodes `rows` of `batch`. Rows are sized first, so the output is allocated once and each
    /// column's values land at known offsets; then one column at a time is written into the
    /// block's (cache-sized) part of the buffer. `Err((column, row))`: a value out of range.
    fn encode_block(
        &self,
        batch: &RecordBatch,
        nulls: &[Option<NullBuffer>],
        rows: Range<usize>,
        buf: &mut BytesMut,
        cursor: &mut Vec<usize>,
    ) -> std::result::Result<(), (usize, usize)> {
        cursor.clear();
        cursor.resize(rows.len(), self.fixed_row_bytes);
        for ((kind, col), nulls) in self.kinds.iter().zip(batch.columns()).zip(nulls) {
            match kind.width() {
                Some(w) => {
                    if let Some(nulls) = nulls {
                        for (c, valid) in cursor.iter_mut().zip(nulls.slice(rows.start, rows.len()).iter()) {
                            if !valid {
                                *c -= w;
                            }
                        }
                    }
                }
                None => add_var_lengths(*kind, col, nulls.as_ref(), rows.clone(), cursor),
            }
        }
        let mut total = 0usize;
        for c in cursor.iter_mut() {
            let size = *c;
            *c = total;
            total += size;
        }
        let base = buf.len();
        buf.resize(base + total, 0);
        let out = &mut buf[base..];
        let count = (self.kinds.len() as i16).to_be_bytes();
        for c in cursor.iter_mut() {
            out[*c..*c + 2].copy_from_slice(&count);
            *c += 2;
        }
        let r = rows.clone();
        for (i, ((kind, col), nulls)) in self.kinds.iter().zip(batch.columns()).zip(nulls).enumerate() {
            let nulls = nulls.as_ref().map(|n| n.slice(r.start, r.len()));
            let nulls = nulls.as_ref();
            let cur = &mut cursor[..];
            match kind {
                Kind::Bool => {
                    let b = col.as_boolean();
                    let values: Vec<u8> = r.clone().map(|i| u8::from(b.value(i))).collect();
                    put_fixed(out, cur, &values, nulls, |v| Some([v]))
                }
                Kind::I16 => {
                    let v = &col.as_primitive::<Int16Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| Some(v.to_be_bytes()))
                }
                Kind::I32 => {
                    let v = &col.as_primitive::<Int32Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| Some(v.to_be_bytes()))
                }
                Kind::I64 => {
                    let v = &col.as_primitive::<Int64Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| Some(v.to_be_bytes()))
                }
                Kind::F32 => {
                    let v = &col.as_primitive::<Float32Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| Some(v.to_be_bytes()))
                }
                Kind::F64 => {
                    let v = &col.as_primitive::<Float64Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| Some(v.to_be_bytes()))
                }
                Kind::TimestampUs => {
                    let v = &col.as_primitive::<TimestampMicrosecondType>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| v.checked_sub(PG_EPOCH_US).map(i64::to_be_bytes))
                }
                Kind::Date => {
                    let v = &col.as_primitive::<Date32Type>().values()[r.clone()];
                    put_fixed(out, cur, v, nulls, |v| v.checked_sub(PG_EPOCH_DAYS).map(i32::to_be_bytes))
                }
                Kind::FixedBinary(w) => {
                    let data = &col.as_fixed_size_binary().value_data()[r.start * w..r.end * w];
                    put_chunks(out, cur, data, *w, nulls);
                    Ok(())
                }
                Kind::Utf8 => {
                    let a = col.as_string::<i32>();
                    put_var(out, cur, &a.value_offsets()[r.start..=r.end], a.values(), nulls);
                    Ok(())
                }
                Kind::LargeUtf8 => {
                    let a = col.as_string::<i64>();
                    put_var(out, cur, &a.value_offsets()[r.start..=r.end], a.values(), nulls);
                    Ok(())
                }
                Kind::Binary => {
                    let a = col.as_binary::<i32>();
                    put_var(out, cur, &a.value_offsets()[r.start..=r.end], a.values(), nulls);
                    Ok(())
                }
                Kind::LargeBinary => {
                    let a = col.as_binary::<i64>();
                    put_var(out, cur, &a.value_offsets()[r.start..=r.end], a.values(), nulls);
                    Ok(())
                }
                Kind::Utf8View => {
                    let a = col.as_string_view();
                    for (k, c) in cur.iter_mut().enumerate() {
                        let valid = nulls.is_none_or(|n| n.is_valid(k));
                        *c = put_value(out, *c, valid.then(|| a.value(r.start + k).as_bytes()));
                    }
                    Ok(())
                }
            }
            .map_err(|k| (i, r.start + k))?;
        }
        debug_assert!(cursor.last().is_some_and(|&c| c == total));
        Ok(())
    }

    fn out_of_range(&self, batch: &RecordBatch, column: usize, row: usize, first_row: u64) -> PgError {
        let value = arrow_cast::display::array_value_to_string(batch.column(column), row).unwrap_or_default();
        let pg = if self.kinds[column] == Kind::Date { "date" } else { "timestamp" };
        PgError::InvalidValue {
            origin: None,
            row: first_row + row as u64,
            column: self.names[column].clone(),
            value,
            reason: format!("is out of range for PostgreSQL {pg}"),
        }
    }
}

/// Adds `4 + len` (or 4 for NULL) of a variable-width column to each row's size; the caller's
/// sizes start with 4 per column already.
fn add_var_lengths(
    kind: Kind,
    col: &ArrayRef,
    nulls: Option<&NullBuffer>,
    rows: Range<usize>,
    sizes: &mut [usize],
) {
    fn add<O: OffsetSizeTrait>(
        offsets: &[O],
        nulls: Option<&NullBuffer>,
        rows: Range<usize>,
        sizes: &mut [usize],
    ) {
        let offsets = &offsets[rows.start..=rows.end];
        for (k, (s, w)) in sizes.iter_mut().zip(offsets.windows(2)).enumerate() {
            if nulls.is_none_or(|n| n.is_valid(rows.start + k)) {
                *s += (w[1] - w[0]).as_usize();
            }
        }
    }
    match kind {
        Kind::Utf8 => add(col.as_string::<i32>().value_offsets(), nulls, rows, sizes),
        Kind::LargeUtf8 => add(col.as_string::<i64>().value_offsets(), nulls, rows, sizes),
        Kind::Binary => add(col.as_binary::<i32>().value_offsets(), nulls, rows, sizes),
        Kind::LargeBinary => add(col.as_binary::<i64>().value_offsets(), nulls, rows, sizes),
        Kind::Utf8View => {
            let a = col.as_string_view();
            for (k, s) in sizes.iter_mut().enumerate() {
                if nulls.is_none_or(|n| n.is_valid(rows.start + k)) {
                    *s += a.value(rows.start + k).len();
                }
            }
        }
        _ => unreachable!("fixed-width kinds are sized by width"),
    }
}

/// Writes one fixed-width column; `Err(row)` when `f` refuses a value (out of range).
fn put_fixed<T: Copy, const W: usize>(
    out: &mut [u8],
    cursor: &mut [usize],
    values: &[T],
    nulls: Option<&NullBuffer>,
    f: impl Fn(T) -> Option<[u8; W]>,
) -> std::result::Result<(), usize> {
    let len = (W as i32).to_be_bytes();
    match nulls {
        None => {
            for (r, (c, &v)) in cursor.iter_mut().zip(values).enumerate() {
                let at = *c;
                let field = &mut out[at..at + 4 + W];
                field[..4].copy_from_slice(&len);
                field[4..].copy_from_slice(&f(v).ok_or(r)?);
                *c = at + 4 + W;
            }
        }
        Some(nulls) => {
            for (r, (c, &v)) in cursor.iter_mut().zip(values).enumerate() {
                let at = *c;
                if nulls.is_valid(r) {
                    let field = &mut out[at..at + 4 + W];
                    field[..4].copy_from_slice(&len);
                    field[4..].copy_from_slice(&f(v).ok_or(r)?);
                    *c = at + 4 + W;
                } else {
                    out[at..at + 4].copy_from_slice(&NULL);
                    *c = at + 4;
                }
            }
        }
    }
    Ok(())
}

/// Writes a `FixedSizeBinary` column of width `w`.
fn put_chunks(out: &mut [u8], cursor: &mut [usize], data: &[u8], w: usize, nulls: Option<&NullBuffer>) {
    for (r, c) in cursor.iter_mut().enumerate() {
        let valid = nulls.is_none_or(|n| n.is_valid(r));
        *c = put_value(out, *c, valid.then(|| &data[r * w..(r + 1) * w]));
    }
}

/// Writes a variable-width column given its offsets and value bytes.
fn put_var<O: OffsetSizeTrait>(
    out: &mut [u8],
    cursor: &mut [usize],
    offsets: &[O],
    data: &[u8],
    nulls: Option<&NullBuffer>,
) {
    for (r, (c, w)) in cursor.iter_mut().zip(offsets.windows(2)).enumerate() {
        let valid = nulls.is_none_or(|n| n.is_valid(r));
        *c = put_value(out, *c, valid.then(|| &data[w[0].as_usize()..w[1].as_usize()]));
    }
}

/// Writes one field at `at` (length word and bytes, or the NULL length); returns the next offset.
#[inline]
fn put_value(out: &mut [u8], at: usize, value: Option<&[u8]>) -> usize {
    match value {
        Some(v) => {
            out[at..at + 4].copy_from_slice(&(v.len() as i32).to_be_bytes());
            out[at + 4..at + 4 + v.len()].copy_from_slice(v);
            at + 4 + v.len()
        }
        None => {
            out[at..at + 4].copy_from_slice(&NULL);
            at + 4
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        BinaryArray, BooleanArray, Date32Array, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array,
        Int32Array, Int64Array, LargeBinaryArray, LargeStringArray, StringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::catalog::TableColumn;
    use crate::conform::{NanosPolicy, NulPolicy};
    use crate::copy::CopyEncoder;

    fn col(name: &str, pg: PgType) -> TableColumn {
        TableColumn { name: name.into(), declared: format!("{pg:?}"), pg_type: Some(pg), not_null: false }
    }

    /// A batch with every kind, `valid[r]` deciding NULLs (shifted per column so patterns differ).
    fn batch(values: &[(i64, f64, String)], valid: &[bool]) -> RecordBatch {
        let n = values.len();
        let ok = |c: usize, r: usize| valid[(r + c) % n];
        let opt = |c: usize| (0..n).map(move |r| ok(c, r));
        let v = |c: usize| {
            opt(c).zip(values).map(|(o, (i, f, s))| o.then(|| (*i, *f, s.clone()))).collect::<Vec<_>>()
        };
        let hashes: Vec<Option<[u8; 32]>> =
            v(12).iter().map(|x| x.as_ref().map(|(i, _, _)| [*i as u8; 32])).collect();
        RecordBatch::try_from_iter([
            (
                "b",
                Arc::new(BooleanArray::from(
                    v(0).iter().map(|x| x.as_ref().map(|t| t.0 % 2 == 0)).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "i2",
                Arc::new(Int16Array::from(
                    v(1).iter().map(|x| x.as_ref().map(|t| t.0 as i16)).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "i4",
                Arc::new(Int32Array::from(
                    v(2).iter().map(|x| x.as_ref().map(|t| t.0 as i32)).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "i8",
                Arc::new(Int64Array::from(v(3).iter().map(|x| x.as_ref().map(|t| t.0)).collect::<Vec<_>>()))
                    as _,
            ),
            (
                "f4",
                Arc::new(Float32Array::from(
                    v(4).iter().map(|x| x.as_ref().map(|t| t.1 as f32)).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "f8",
                Arc::new(Float64Array::from(v(5).iter().map(|x| x.as_ref().map(|t| t.1)).collect::<Vec<_>>()))
                    as _,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(
                    v(6).iter().map(|x| x.as_ref().map(|t| t.0.rem_euclid(1 << 52))).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "d",
                Arc::new(Date32Array::from(
                    v(7).iter().map(|x| x.as_ref().map(|t| (t.0 % 100_000) as i32)).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "s",
                Arc::new(StringArray::from(
                    v(8).iter().map(|x| x.as_ref().map(|t| t.2.clone())).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "ls",
                Arc::new(LargeStringArray::from(
                    v(9).iter().map(|x| x.as_ref().map(|t| t.2.clone())).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(
                    v(10).iter().map(|x| x.as_ref().map(|t| t.2.as_bytes())).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "lbin",
                Arc::new(LargeBinaryArray::from(
                    v(11).iter().map(|x| x.as_ref().map(|t| t.2.as_bytes())).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "h",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(hashes.into_iter(), 32).unwrap(),
                ) as _,
            ),
            (
                "sv",
                Arc::new(StringViewArray::from(
                    v(13).iter().map(|x| x.as_ref().map(|t| t.2.clone())).collect::<Vec<_>>(),
                )) as _,
            ),
            (
                "tstz",
                Arc::new(
                    TimestampMicrosecondArray::from(
                        v(14)
                            .iter()
                            .map(|x| x.as_ref().map(|t| -t.0.rem_euclid(1 << 52)))
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ) as _,
            ),
        ])
        .unwrap()
    }

    fn table() -> Vec<TableColumn> {
        use PgType as P;
        [
            ("b", P::Bool),
            ("i2", P::Int2),
            ("i4", P::Int4),
            ("i8", P::Int8),
            ("f4", P::Float4),
            ("f8", P::Float8),
            ("ts", P::Timestamp),
            ("d", P::Date),
            ("s", P::Text),
            ("ls", P::Text),
            ("bin", P::Bytea),
            ("lbin", P::Bytea),
            ("h", P::Bytea),
            ("sv", P::Text),
            ("tstz", P::Timestamptz),
        ]
        .into_iter()
        .map(|(n, p)| col(n, p))
        .collect()
    }

    fn encode(batch: &RecordBatch, pgpq: bool) -> Vec<u8> {
        let (t, s) = (table(), batch.schema());
        let mut enc = if pgpq {
            CopyEncoder::new_pgpq(&t, &s, NanosPolicy::Reject, NulPolicy::Reject)
        } else {
            CopyEncoder::new(&t, &s, NanosPolicy::Reject, NulPolicy::Reject)
        }
        .unwrap();
        let mut buf = BytesMut::new();
        enc.write_header(&mut buf);
        // Two slices, so offsets inside sliced arrays are exercised too.
        let half = batch.num_rows() / 2;
        enc.write_batch(&batch.slice(0, half), &mut buf).unwrap();
        enc.write_batch(&batch.slice(half, batch.num_rows() - half), &mut buf).unwrap();
        enc.write_trailer(&mut buf);
        buf.to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
        /// The columnar encoder writes exactly the bytes pgpq writes, NULLs and slices included.
        #[test]
        fn same_bytes_as_pgpq(
            rows in proptest::collection::vec((any::<i64>(), any::<f64>(), "\\PC{0,12}"), 1..2600),
            valid in proptest::collection::vec(any::<bool>(), 1..50),
        ) {
            let valid: Vec<bool> = (0..rows.len()).map(|r| valid[r % valid.len()]).collect();
            let b = batch(&rows, &valid);
            prop_assert_eq!(encode(&b, false), encode(&b, true));
        }
    }

    #[test]
    fn the_fast_path_is_taken_only_for_scalar_columns() {
        let t = table();
        let b = batch(&[(1, 1.0, "x".into())], &[true]);
        let conformer =
            crate::conform::Conformer::plan("t", &t, &b.schema(), NanosPolicy::Reject, NulPolicy::Reject)
                .unwrap();
        assert!(ColumnarEncoder::new(&conformer.pg_types(), conformer.target_schema()).is_some());
        let numeric = [col("n", PgType::Numeric { precision_scale: None })];
        let nb =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let c = crate::conform::Conformer::plan(
            "t",
            &numeric,
            &nb.schema(),
            NanosPolicy::Reject,
            NulPolicy::Reject,
        )
        .unwrap();
        assert!(ColumnarEncoder::new(&c.pg_types(), c.target_schema()).is_none());
    }

    #[test]
    fn out_of_range_timestamps_name_row_column_and_value() {
        let t = [col("ts", PgType::Timestamp)];
        let b = RecordBatch::try_from_iter([(
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![Some(0), None, Some(i64::MIN)])) as ArrayRef,
        )])
        .unwrap();
        let mut enc = CopyEncoder::new(&t, &b.schema(), NanosPolicy::Reject, NulPolicy::Reject).unwrap();
        let err = enc.write_batch(&b, &mut BytesMut::new()).unwrap_err();
        match err {
            PgError::InvalidValue { row, column, reason, .. } => {
                assert_eq!((row, column.as_str()), (3, "ts"));
                assert!(reason.contains("out of range"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
