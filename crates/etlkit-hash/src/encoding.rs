//! The canonical row encoding `etlkit-row-v1` (see `docs/row-hash.md`).
//!
//! Rows are encoded a chunk at a time, column by column: for each column a loop specialised to its
//! Arrow type writes that column's value of every row of the chunk into the row's slot of one reused
//! buffer. Each row's slot is sized from per-column upper bounds (plus exact lengths for variable-size
//! values), so fixed-size values are written with fixed-width stores and no per-value dispatch or
//! allocation happens in the loops. Nested values (lists, structs) take a slower recursive path.

use std::ops::Range;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, FixedSizeBinaryArray, GenericByteArray,
    GenericByteViewArray, PrimitiveArray, downcast_dictionary_array,
};
use arrow_buffer::{ArrowNativeType, i256};
use arrow_schema::{DataType, TimeUnit};

use crate::error::HashError;

/// Tag of a NULL value.
pub(crate) const NULL: u8 = 0x00;
const FALSE: u8 = 0x01;
const TRUE: u8 = 0x02;
const INT: u8 = 0x10;
const FLOAT: u8 = 0x20;
const DECIMAL: u8 = 0x30;
const STRING: u8 = 0x40;
const BINARY: u8 = 0x41;
const DATE: u8 = 0x50;
const INSTANT: u8 = 0x60;
const LOCAL_TS: u8 = 0x70;
const TIME: u8 = 0x80;
const DURATION: u8 = 0x90;
const LIST: u8 = 0xa0;
const STRUCT: u8 = 0xb0;

type F16 = <Float16Type as ArrowPrimitiveType>::Native;

const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;
const MS_PER_DAY: i64 = 86_400_000;

/// Writes `tag | k` and `Z(v)` at `buf[*c..]`, using a fixed 9-byte store (the slot bound reserves it).
#[inline(always)]
fn put_z64(buf: &mut [u8], c: &mut usize, kind: u8, v: i64) {
    let n = (v ^ (v >> 63)) as u64;
    let k = (64 - n.leading_zeros() + 8) / 8; // 1..=8
    let shifted = (v as u64) << (8 * (8 - k));
    let at = *c;
    let dst = &mut buf[at..at + 9];
    dst[0] = kind | k as u8;
    dst[1..].copy_from_slice(&shifted.to_be_bytes());
    *c = at + 1 + k as usize;
}

/// Like [`put_z64`] for values that may need up to 16 bytes; uses a fixed 17-byte store.
#[inline(always)]
fn put_z128(buf: &mut [u8], c: &mut usize, kind: u8, v: i128) {
    let n = (v ^ (v >> 127)) as u128;
    let k = (128 - n.leading_zeros() + 8) / 8; // 1..=16
    let shifted = (v as u128) << (8 * (16 - k));
    let at = *c;
    let dst = &mut buf[at..at + 17];
    dst[0] = kind | k as u8;
    dst[1..].copy_from_slice(&shifted.to_be_bytes());
    *c = at + 1 + k as usize;
}

/// A value that is an integer number of nanoseconds: i64 fast path, i128 when it overflows.
#[inline(always)]
fn put_scaled(buf: &mut [u8], c: &mut usize, kind: u8, v: i64, factor: i64) {
    match v.checked_mul(factor) {
        Some(ns) => put_z64(buf, c, kind, ns),
        None => put_z128(buf, c, kind, v as i128 * factor as i128),
    }
}

/// The normalised binary64 bit pattern: -0.0 → +0.0, every NaN → the canonical quiet NaN.
/// Branch-free: zeros are common in real data (tolls, fees), so branches would mispredict.
#[inline(always)]
fn float_bits(x: f64) -> u64 {
    let bits = x.to_bits();
    let abs = bits & !(1 << 63);
    let zero_mask = u64::from(abs == 0).wrapping_neg();
    let nan_mask = u64::from(abs > 0x7ff0_0000_0000_0000).wrapping_neg();
    let bits = bits & !zero_mask;
    (bits & !nan_mask) | (CANONICAL_NAN & nan_mask)
}

#[inline(always)]
fn put_f64(buf: &mut [u8], c: &mut usize, x: f64) {
    let bits = float_bits(x);
    let k = 8 - bits.trailing_zeros() / 8; // 0..=8
    let at = *c;
    let dst = &mut buf[at..at + 9];
    dst[0] = FLOAT | k as u8;
    dst[1..].copy_from_slice(&bits.to_be_bytes());
    *c = at + 1 + k as usize;
}

/// Number of bytes of `LEB(n)`.
#[inline(always)]
fn leb_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

#[inline(always)]
fn put_leb(buf: &mut [u8], c: &mut usize, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[*c] = b;
            *c += 1;
            return;
        }
        buf[*c] = b | 0x80;
        *c += 1;
    }
}

#[inline(always)]
fn put_bytes(buf: &mut [u8], c: &mut usize, tag: u8, bytes: &[u8]) {
    buf[*c] = tag;
    *c += 1;
    put_leb(buf, c, bytes.len());
    buf[*c..*c + bytes.len()].copy_from_slice(bytes);
    *c += bytes.len();
}

/// Strips redundant sign bytes of a big-endian two's-complement integer (keeps at least one byte).
fn minimal_be(bytes: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < bytes.len() {
        let (b, next) = (bytes[i], bytes[i + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            i += 1;
        } else {
            break;
        }
    }
    &bytes[i..]
}

/// `LZ(x)` from a big-endian two's-complement integer.
fn put_lz(buf: &mut [u8], c: &mut usize, be: &[u8]) {
    let z = minimal_be(be);
    buf[*c] = z.len() as u8;
    buf[*c + 1..*c + 1 + z.len()].copy_from_slice(z);
    *c += 1 + z.len();
}

fn normalise_decimal_i128(mut m: i128, scale: i8) -> (i128, i32) {
    let mut e = scale as i32;
    if m == 0 {
        return (0, 0);
    }
    while m % 10 == 0 {
        m /= 10;
        e -= 1;
    }
    (m, e)
}

fn normalise_decimal_i256(mut m: i256, scale: i8) -> (i256, i32) {
    let mut e = scale as i32;
    if m == i256::ZERO {
        return (m, 0);
    }
    let ten = i256::from_i128(10);
    while m.wrapping_rem(ten) == i256::ZERO {
        m = m.wrapping_div(ten);
        e -= 1;
    }
    (m, e)
}

fn unit_ns(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Byte access shared by the string and binary layouts.
trait ByteValues: Sync {
    fn bytes_at(&self, i: usize) -> &[u8];
}

impl<T: ByteArrayType> ByteValues for GenericByteArray<T> {
    #[inline(always)]
    fn bytes_at(&self, i: usize) -> &[u8] {
        self.value(i).as_ref()
    }
}

impl<T: ByteViewType + ?Sized> ByteValues for GenericByteViewArray<T> {
    #[inline(always)]
    fn bytes_at(&self, i: usize) -> &[u8] {
        self.value(i).as_ref()
    }
}

impl ByteValues for FixedSizeBinaryArray {
    #[inline(always)]
    fn bytes_at(&self, i: usize) -> &[u8] {
        self.value(i)
    }
}

/// Per-row write cursors and the shared buffer of one chunk.
pub(crate) struct Slots<'s> {
    pub(crate) buf: &'s mut [u8],
    pub(crate) cursors: &'s mut [usize],
}

/// One column prepared for encoding. One dynamic call per column per chunk; the loops inside are
/// specialised to the column's type.
pub(crate) trait ColumnEncoder: Sync {
    /// Upper bound of bytes written per row (fixed part).
    fn fixed_bound(&self) -> usize;
    /// Adds the variable part of each row's bound (exact lengths for variable-size values).
    fn add_var_bounds(
        &self,
        _rows: Range<usize>,
        _bounds: &mut [usize],
        _arena: &mut Arena,
    ) -> Result<(), HashError> {
        Ok(())
    }
    /// Writes the value of each row of `rows` at that row's cursor and advances it.
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, arena: &Arena) -> Result<(), HashError>;
}

/// Per-chunk, per-column scratch for the nested path: encoded values and their end offsets.
#[derive(Default)]
pub(crate) struct Arena {
    pub(crate) bytes: Vec<u8>,
    pub(crate) ends: Vec<usize>,
}

macro_rules! null_or {
    ($arr:expr, $i:expr, $slots:expr, $c:ident, $body:block) => {
        if $arr.is_null($i) {
            $slots.buf[*$c] = NULL;
            *$c += 1;
        } else $body
    };
}

struct NullColumn;
impl ColumnEncoder for NullColumn {
    fn fixed_bound(&self) -> usize {
        1
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        for r in 0..rows.len() {
            let c = &mut slots.cursors[r];
            slots.buf[*c] = NULL;
            *c += 1;
        }
        Ok(())
    }
}

struct BoolColumn<'a>(&'a BooleanArray);
impl ColumnEncoder for BoolColumn<'_> {
    fn fixed_bound(&self) -> usize {
        1
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.0;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            slots.buf[*c] = if a.is_null(i) {
                NULL
            } else if a.value(i) {
                TRUE
            } else {
                FALSE
            };
            *c += 1;
        }
        Ok(())
    }
}

/// Integer-like columns whose canonical value fits i64 after `map` (ints, dates, times, timestamps).
struct Int64Like<'a, T: ArrowPrimitiveType> {
    array: &'a PrimitiveArray<T>,
    kind: u8,
    factor: i64,
}
impl<T> ColumnEncoder for Int64Like<'_, T>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i64>,
{
    fn fixed_bound(&self) -> usize {
        if self.factor == 1 { 9 } else { 17 }
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        let values = &a.values()[rows.clone()];
        let (kind, factor) = (self.kind, self.factor);
        if a.null_count() == 0 {
            if factor == 1 {
                for (v, c) in values.iter().zip(slots.cursors.iter_mut()) {
                    put_z64(slots.buf, c, kind, (*v).into());
                }
            } else {
                for (v, c) in values.iter().zip(slots.cursors.iter_mut()) {
                    put_scaled(slots.buf, c, kind, (*v).into(), factor);
                }
            }
        } else {
            for (r, i) in rows.enumerate() {
                let c = &mut slots.cursors[r];
                null_or!(a, i, slots, c, { put_scaled(slots.buf, c, kind, values[r].into(), factor) });
            }
        }
        Ok(())
    }
}

struct UInt64Column<'a>(&'a PrimitiveArray<UInt64Type>);
impl ColumnEncoder for UInt64Column<'_> {
    fn fixed_bound(&self) -> usize {
        17
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.0;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            null_or!(a, i, slots, c, {
                let v = a.value(i);
                match i64::try_from(v) {
                    Ok(v) => put_z64(slots.buf, c, INT, v),
                    Err(_) => put_z128(slots.buf, c, INT, v as i128),
                }
            });
        }
        Ok(())
    }
}

struct Date64Column<'a> {
    array: &'a PrimitiveArray<Date64Type>,
    column: &'a str,
    row_offset: usize,
}
impl ColumnEncoder for Date64Column<'_> {
    fn fixed_bound(&self) -> usize {
        9
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            null_or!(a, i, slots, c, {
                let ms = a.value(i);
                if ms % MS_PER_DAY != 0 {
                    return Err(HashError::InvalidValue {
                        column: self.column.to_string(),
                        row: self.row_offset + i,
                        value: ms.to_string(),
                        reason: "Date64 value is not a whole number of days (86 400 000 ms)",
                    });
                }
                put_z64(slots.buf, c, DATE, ms / MS_PER_DAY);
            });
        }
        Ok(())
    }
}

/// `widen` is a closure type parameter (not a fn pointer) so it is inlined into the loop.
struct FloatColumn<'a, T: ArrowPrimitiveType, W> {
    array: &'a PrimitiveArray<T>,
    widen: W,
}
impl<T: ArrowPrimitiveType, W: Fn(T::Native) -> f64 + Sync> ColumnEncoder for FloatColumn<'_, T, W> {
    fn fixed_bound(&self) -> usize {
        9
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        let values = &a.values()[rows.clone()];
        let widen = &self.widen;
        if a.null_count() == 0 {
            for (v, c) in values.iter().zip(slots.cursors.iter_mut()) {
                put_f64(slots.buf, c, widen(*v));
            }
        } else {
            for (r, i) in rows.enumerate() {
                let c = &mut slots.cursors[r];
                null_or!(a, i, slots, c, { put_f64(slots.buf, c, widen(values[r])) });
            }
        }
        Ok(())
    }
}

struct BytesColumn<'a, A: ByteValues> {
    array: &'a A,
    tag: u8,
}
impl<A: ByteValues + Array> ColumnEncoder for BytesColumn<'_, A> {
    fn fixed_bound(&self) -> usize {
        1
    }
    fn add_var_bounds(
        &self,
        rows: Range<usize>,
        bounds: &mut [usize],
        _: &mut Arena,
    ) -> Result<(), HashError> {
        let a = self.array;
        for (r, i) in rows.enumerate() {
            if !a.is_null(i) {
                let n = a.bytes_at(i).len();
                bounds[r] += leb_len(n) + n;
            }
        }
        Ok(())
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            null_or!(a, i, slots, c, { put_bytes(slots.buf, c, self.tag, a.bytes_at(i)) });
        }
        Ok(())
    }
}

struct DecimalColumn<'a, T: ArrowPrimitiveType> {
    array: &'a PrimitiveArray<T>,
    scale: i8,
}
impl<T> ColumnEncoder for DecimalColumn<'_, T>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    fn fixed_bound(&self) -> usize {
        1 + 1 + 4 + 1 + 16
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            null_or!(a, i, slots, c, {
                let (m, e) = normalise_decimal_i128(a.value(i).into(), self.scale);
                slots.buf[*c] = DECIMAL;
                *c += 1;
                put_lz(slots.buf, c, &e.to_be_bytes());
                put_lz(slots.buf, c, &m.to_be_bytes());
            });
        }
        Ok(())
    }
}

struct Decimal256Column<'a> {
    array: &'a PrimitiveArray<Decimal256Type>,
    scale: i8,
}
impl ColumnEncoder for Decimal256Column<'_> {
    fn fixed_bound(&self) -> usize {
        1 + 1 + 4 + 1 + 32
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, _: &Arena) -> Result<(), HashError> {
        let a = self.array;
        for (r, i) in rows.enumerate() {
            let c = &mut slots.cursors[r];
            null_or!(a, i, slots, c, {
                let (m, e) = normalise_decimal_i256(a.value(i), self.scale);
                slots.buf[*c] = DECIMAL;
                *c += 1;
                put_lz(slots.buf, c, &e.to_be_bytes());
                put_lz(slots.buf, c, &m.to_be_bytes());
            });
        }
        Ok(())
    }
}

/// Lists, structs and anything nested: encoded recursively into the column's arena first.
struct NestedColumn<'a> {
    array: &'a dyn Array,
    column: &'a str,
    row_offset: usize,
}
impl ColumnEncoder for NestedColumn<'_> {
    fn fixed_bound(&self) -> usize {
        0
    }
    fn add_var_bounds(
        &self,
        rows: Range<usize>,
        bounds: &mut [usize],
        arena: &mut Arena,
    ) -> Result<(), HashError> {
        arena.bytes.clear();
        arena.ends.clear();
        for (r, i) in rows.enumerate() {
            let start = arena.bytes.len();
            encode_value(self.array, i, &mut arena.bytes)
                .map_err(|e| e.at(self.column, self.row_offset + i))?;
            arena.ends.push(arena.bytes.len());
            bounds[r] += arena.bytes.len() - start;
        }
        Ok(())
    }
    fn encode(&self, rows: Range<usize>, slots: &mut Slots<'_>, arena: &Arena) -> Result<(), HashError> {
        let mut start = 0;
        for r in 0..rows.len() {
            let end = arena.ends[r];
            let c = &mut slots.cursors[r];
            let n = end - start;
            slots.buf[*c..*c + n].copy_from_slice(&arena.bytes[start..end]);
            *c += n;
            start = end;
        }
        Ok(())
    }
}

/// Why a nested value could not be encoded (the caller adds column and row).
pub(crate) enum ValueError {
    Unsupported(DataType),
    Invalid { value: String, reason: &'static str },
}

impl ValueError {
    fn at(self, column: &str, row: usize) -> HashError {
        match self {
            ValueError::Unsupported(data_type) => {
                HashError::UnsupportedType { column: column.to_string(), data_type }
            }
            ValueError::Invalid { value, reason } => {
                HashError::InvalidValue { column: column.to_string(), row, value, reason }
            }
        }
    }
}

fn push_z(out: &mut Vec<u8>, kind: u8, v: i128) {
    let be = v.to_be_bytes();
    let z = minimal_be(&be);
    out.push(kind | z.len() as u8);
    out.extend_from_slice(z);
}

fn push_lz(out: &mut Vec<u8>, be: &[u8]) {
    let z = minimal_be(be);
    out.push(z.len() as u8);
    out.extend_from_slice(z);
}

fn push_leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn push_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    push_leb(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn push_float(out: &mut Vec<u8>, x: f64) {
    let bits = float_bits(x);
    let k = (8 - bits.trailing_zeros() / 8) as usize;
    out.push(FLOAT | k as u8);
    out.extend_from_slice(&bits.to_be_bytes()[..k]);
}

/// The reference (slow, recursive) encoder of one value; used for nested columns.
pub(crate) fn encode_value(a: &dyn Array, i: usize, out: &mut Vec<u8>) -> Result<(), ValueError> {
    if a.is_null(i) || matches!(a.data_type(), DataType::Null) {
        out.push(NULL);
        return Ok(());
    }
    match a.data_type() {
        DataType::Boolean => out.push(if a.as_boolean().value(i) { TRUE } else { FALSE }),
        DataType::Int8 => push_z(out, INT, a.as_primitive::<Int8Type>().value(i) as i128),
        DataType::Int16 => push_z(out, INT, a.as_primitive::<Int16Type>().value(i) as i128),
        DataType::Int32 => push_z(out, INT, a.as_primitive::<Int32Type>().value(i) as i128),
        DataType::Int64 => push_z(out, INT, a.as_primitive::<Int64Type>().value(i) as i128),
        DataType::UInt8 => push_z(out, INT, a.as_primitive::<UInt8Type>().value(i) as i128),
        DataType::UInt16 => push_z(out, INT, a.as_primitive::<UInt16Type>().value(i) as i128),
        DataType::UInt32 => push_z(out, INT, a.as_primitive::<UInt32Type>().value(i) as i128),
        DataType::UInt64 => push_z(out, INT, a.as_primitive::<UInt64Type>().value(i) as i128),
        DataType::Float16 => push_float(out, a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => push_float(out, a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => push_float(out, a.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal32(_, s) => {
            let (m, e) = normalise_decimal_i128(a.as_primitive::<Decimal32Type>().value(i) as i128, *s);
            out.push(DECIMAL);
            push_lz(out, &e.to_be_bytes());
            push_lz(out, &m.to_be_bytes());
        }
        DataType::Decimal64(_, s) => {
            let (m, e) = normalise_decimal_i128(a.as_primitive::<Decimal64Type>().value(i) as i128, *s);
            out.push(DECIMAL);
            push_lz(out, &e.to_be_bytes());
            push_lz(out, &m.to_be_bytes());
        }
        DataType::Decimal128(_, s) => {
            let (m, e) = normalise_decimal_i128(a.as_primitive::<Decimal128Type>().value(i), *s);
            out.push(DECIMAL);
            push_lz(out, &e.to_be_bytes());
            push_lz(out, &m.to_be_bytes());
        }
        DataType::Decimal256(_, s) => {
            let (m, e) = normalise_decimal_i256(a.as_primitive::<Decimal256Type>().value(i), *s);
            out.push(DECIMAL);
            push_lz(out, &e.to_be_bytes());
            push_lz(out, &m.to_be_bytes());
        }
        DataType::Utf8 => push_bytes(out, STRING, a.as_string::<i32>().value(i).as_bytes()),
        DataType::LargeUtf8 => push_bytes(out, STRING, a.as_string::<i64>().value(i).as_bytes()),
        DataType::Utf8View => push_bytes(out, STRING, a.as_string_view().value(i).as_bytes()),
        DataType::Binary => push_bytes(out, BINARY, a.as_binary::<i32>().value(i)),
        DataType::LargeBinary => push_bytes(out, BINARY, a.as_binary::<i64>().value(i)),
        DataType::BinaryView => push_bytes(out, BINARY, a.as_binary_view().value(i)),
        DataType::FixedSizeBinary(_) => push_bytes(out, BINARY, a.as_fixed_size_binary().value(i)),
        DataType::Date32 => push_z(out, DATE, a.as_primitive::<Date32Type>().value(i) as i128),
        DataType::Date64 => {
            let ms = a.as_primitive::<Date64Type>().value(i);
            if ms % MS_PER_DAY != 0 {
                return Err(ValueError::Invalid {
                    value: ms.to_string(),
                    reason: "Date64 value is not a whole number of days (86 400 000 ms)",
                });
            }
            push_z(out, DATE, (ms / MS_PER_DAY) as i128)
        }
        DataType::Timestamp(unit, tz) => {
            let kind = if tz.is_some() { INSTANT } else { LOCAL_TS };
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
            };
            push_z(out, kind, v as i128 * unit_ns(*unit) as i128)
        }
        DataType::Time32(unit) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<Time32SecondType>().value(i),
                TimeUnit::Millisecond => a.as_primitive::<Time32MillisecondType>().value(i),
                _ => return Err(ValueError::Unsupported(a.data_type().clone())),
            };
            push_z(out, TIME, v as i128 * unit_ns(*unit) as i128)
        }
        DataType::Time64(unit) => {
            let v = match unit {
                TimeUnit::Microsecond => a.as_primitive::<Time64MicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<Time64NanosecondType>().value(i),
                _ => return Err(ValueError::Unsupported(a.data_type().clone())),
            };
            push_z(out, TIME, v as i128 * unit_ns(*unit) as i128)
        }
        DataType::Duration(unit) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<DurationSecondType>().value(i),
                TimeUnit::Millisecond => a.as_primitive::<DurationMillisecondType>().value(i),
                TimeUnit::Microsecond => a.as_primitive::<DurationMicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<DurationNanosecondType>().value(i),
            };
            push_z(out, DURATION, v as i128 * unit_ns(*unit) as i128)
        }
        DataType::List(_) => push_list(out, &a.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => push_list(out, &a.as_list::<i64>().value(i))?,
        DataType::FixedSizeList(_, _) => push_list(out, &a.as_fixed_size_list().value(i))?,
        DataType::Struct(_) => {
            let s = a.as_struct();
            out.push(STRUCT);
            push_leb(out, s.num_columns());
            for child in s.columns() {
                encode_value(child.as_ref(), i, out)?;
            }
        }
        DataType::Dictionary(_, _) => downcast_dictionary_array!(
            a => {
                let key = a.keys().value(i).as_usize();
                encode_value(a.values().as_ref(), key, out)?;
            }
            other => return Err(ValueError::Unsupported(other.clone()))
        ),
        other => return Err(ValueError::Unsupported(other.clone())),
    }
    Ok(())
}

fn push_list(out: &mut Vec<u8>, elements: &ArrayRef) -> Result<(), ValueError> {
    out.push(LIST);
    push_leb(out, elements.len());
    for j in 0..elements.len() {
        encode_value(elements.as_ref(), j, out)?;
    }
    Ok(())
}

/// Whether `data_type` can be hashed (checked up front so errors name the column before any work).
pub(crate) fn check_supported(data_type: &DataType) -> bool {
    value_kind(data_type).is_some()
}

/// The logical kind (docs/row-hash.md, section 3) that values of `data_type` are hashed as:
/// `integer`, `float`, `decimal`, `string`, `binary`, `boolean`, `date`, `instant`,
/// `local timestamp`, `time`, `duration`, `null`, `list<kind>`, `struct<kind,…>` (a dictionary is its
/// value type's kind). Columns of two types with one kind give equal values equal hashes; across
/// kinds, values never hash alike. `None`: the type cannot be hashed.
pub fn value_kind(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Null => "null".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "integer".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "float".into(),
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => "decimal".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "binary".into()
        }
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "instant".into(),
        DataType::Timestamp(_, None) => "local timestamp".into(),
        DataType::Time32(TimeUnit::Second | TimeUnit::Millisecond)
        | DataType::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond) => "time".into(),
        DataType::Duration(_) => "duration".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("list<{}>", value_kind(f.data_type())?)
        }
        DataType::Struct(fields) => {
            let kinds = fields.iter().map(|f| value_kind(f.data_type())).collect::<Option<Vec<_>>>()?;
            format!("struct<{}>", kinds.join(","))
        }
        DataType::Dictionary(key, value) if key.is_dictionary_key_type() => value_kind(value)?,
        _ => return None,
    })
}

/// Builds the type-specialised encoder of one column. `array` must not be a dictionary at top level
/// (the caller unpacks those). `row_offset` is added to row numbers in error messages.
pub(crate) fn column_encoder<'a>(
    array: &'a ArrayRef,
    column: &'a str,
    row_offset: usize,
) -> Result<Box<dyn ColumnEncoder + 'a>, HashError> {
    let a: &'a dyn Array = array.as_ref();
    macro_rules! int {
        ($t:ty, $kind:expr, $factor:expr) => {
            Box::new(Int64Like { array: a.as_primitive::<$t>(), kind: $kind, factor: $factor })
        };
    }
    let unsupported =
        || HashError::UnsupportedType { column: column.to_string(), data_type: a.data_type().clone() };
    Ok(match a.data_type() {
        DataType::Null => Box::new(NullColumn),
        DataType::Boolean => Box::new(BoolColumn(a.as_boolean())),
        DataType::Int8 => int!(Int8Type, INT, 1),
        DataType::Int16 => int!(Int16Type, INT, 1),
        DataType::Int32 => int!(Int32Type, INT, 1),
        DataType::Int64 => int!(Int64Type, INT, 1),
        DataType::UInt8 => int!(UInt8Type, INT, 1),
        DataType::UInt16 => int!(UInt16Type, INT, 1),
        DataType::UInt32 => int!(UInt32Type, INT, 1),
        DataType::UInt64 => Box::new(UInt64Column(a.as_primitive::<UInt64Type>())),
        DataType::Float16 => {
            Box::new(FloatColumn { array: a.as_primitive::<Float16Type>(), widen: |v: F16| v.to_f64() })
        }
        DataType::Float32 => {
            Box::new(FloatColumn { array: a.as_primitive::<Float32Type>(), widen: |v: f32| v as f64 })
        }
        DataType::Float64 => {
            Box::new(FloatColumn { array: a.as_primitive::<Float64Type>(), widen: |v: f64| v })
        }
        DataType::Decimal32(_, s) => {
            Box::new(DecimalColumn { array: a.as_primitive::<Decimal32Type>(), scale: *s })
        }
        DataType::Decimal64(_, s) => {
            Box::new(DecimalColumn { array: a.as_primitive::<Decimal64Type>(), scale: *s })
        }
        DataType::Decimal128(_, s) => {
            Box::new(DecimalColumn { array: a.as_primitive::<Decimal128Type>(), scale: *s })
        }
        DataType::Decimal256(_, s) => {
            Box::new(Decimal256Column { array: a.as_primitive::<Decimal256Type>(), scale: *s })
        }
        DataType::Utf8 => Box::new(BytesColumn { array: a.as_string::<i32>(), tag: STRING }),
        DataType::LargeUtf8 => Box::new(BytesColumn { array: a.as_string::<i64>(), tag: STRING }),
        DataType::Utf8View => Box::new(BytesColumn { array: a.as_string_view(), tag: STRING }),
        DataType::Binary => Box::new(BytesColumn { array: a.as_binary::<i32>(), tag: BINARY }),
        DataType::LargeBinary => Box::new(BytesColumn { array: a.as_binary::<i64>(), tag: BINARY }),
        DataType::BinaryView => Box::new(BytesColumn { array: a.as_binary_view(), tag: BINARY }),
        DataType::FixedSizeBinary(_) => {
            Box::new(BytesColumn { array: a.as_fixed_size_binary(), tag: BINARY })
        }
        DataType::Date32 => int!(Date32Type, DATE, 1),
        DataType::Date64 => {
            Box::new(Date64Column { array: a.as_primitive::<Date64Type>(), column, row_offset })
        }
        DataType::Timestamp(unit, tz) => {
            let kind = if tz.is_some() { INSTANT } else { LOCAL_TS };
            let f = unit_ns(*unit);
            match unit {
                TimeUnit::Second => int!(TimestampSecondType, kind, f),
                TimeUnit::Millisecond => int!(TimestampMillisecondType, kind, f),
                TimeUnit::Microsecond => int!(TimestampMicrosecondType, kind, f),
                TimeUnit::Nanosecond => int!(TimestampNanosecondType, kind, f),
            }
        }
        DataType::Time32(TimeUnit::Second) => int!(Time32SecondType, TIME, 1_000_000_000),
        DataType::Time32(TimeUnit::Millisecond) => int!(Time32MillisecondType, TIME, 1_000_000),
        DataType::Time64(TimeUnit::Microsecond) => int!(Time64MicrosecondType, TIME, 1_000),
        DataType::Time64(TimeUnit::Nanosecond) => int!(Time64NanosecondType, TIME, 1),
        DataType::Duration(unit) => {
            let f = unit_ns(*unit);
            match unit {
                TimeUnit::Second => int!(DurationSecondType, DURATION, f),
                TimeUnit::Millisecond => int!(DurationMillisecondType, DURATION, f),
                TimeUnit::Microsecond => int!(DurationMicrosecondType, DURATION, f),
                TimeUnit::Nanosecond => int!(DurationNanosecondType, DURATION, f),
            }
        }
        dt @ (DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Struct(_)
        | DataType::Dictionary(_, _)) => {
            if !check_supported(dt) {
                return Err(unsupported());
            }
            Box::new(NestedColumn { array: a, column, row_offset })
        }
        _ => return Err(unsupported()),
    })
}

#[cfg(test)]
mod tests {
    //! The type-specialised column loops must agree with the simple recursive encoder on every value.
    use std::sync::Arc;

    use arrow_array::*;
    use arrow_schema::DataType;

    use super::encode_value;
    use crate::{Algorithm, RowHasher};

    /// Deterministic values biased towards the edges where minimal encodings change length.
    fn values(n: usize) -> Vec<i64> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let shift = (i % 64) as u32;
                let v = (x as i64) >> shift;
                match i % 7 {
                    0 => v,
                    1 => -(1i64 << (shift.min(62))),
                    2 => (1i64 << shift.min(62)) - 1,
                    3 => 0,
                    4 => i64::MIN + (i as i64),
                    5 => i64::MAX - (i as i64),
                    _ => v / 1000,
                }
            })
            .collect()
    }

    #[test]
    fn fast_column_loops_agree_with_the_reference_encoder() {
        let n = 3000;
        let v = values(n);
        let valid = |i: usize| i % 11 != 5;
        let ints = Int64Array::from_iter(v.iter().enumerate().map(|(i, x)| valid(i).then_some(*x)));
        let cast = |dt: DataType| arrow_cast::cast_with_options(&ints, &dt, &Default::default()).unwrap();
        let floats = Float64Array::from_iter(
            v.iter().enumerate().map(|(i, x)| valid(i).then(|| f64::from_bits(*x as u64))),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ints.clone()),
            cast(DataType::Int32),
            cast(DataType::Int8),
            cast(DataType::UInt64),
            cast(DataType::UInt16),
            Arc::new(floats.clone()),
            arrow_cast::cast(&floats, &DataType::Float32).unwrap(),
            arrow_cast::cast(&floats, &DataType::Float16).unwrap(),
            cast(DataType::Timestamp(arrow_schema::TimeUnit::Second, Some("UTC".into()))),
            cast(DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None)),
            cast(DataType::Date32),
            make_array(
                cast(DataType::Int32)
                    .to_data()
                    .into_builder()
                    .data_type(DataType::Time32(arrow_schema::TimeUnit::Millisecond))
                    .build()
                    .unwrap(),
            ),
            make_array(
                ints.to_data()
                    .into_builder()
                    .data_type(DataType::Time64(arrow_schema::TimeUnit::Nanosecond))
                    .build()
                    .unwrap(),
            ),
            cast(DataType::Duration(arrow_schema::TimeUnit::Second)),
            Arc::new(
                Decimal128Array::from_iter(v.iter().map(|x| Some(*x as i128 * 1000)))
                    .with_precision_and_scale(38, 5)
                    .unwrap(),
            ),
            Arc::new(
                Decimal256Array::from_iter(
                    v.iter().map(|x| Some(arrow_buffer::i256::from_i128(*x as i128 * 100))),
                )
                .with_precision_and_scale(76, 3)
                .unwrap(),
            ),
            Arc::new(BooleanArray::from_iter(v.iter().enumerate().map(|(i, x)| valid(i).then_some(*x > 0)))),
            Arc::new(StringArray::from_iter(
                v.iter().enumerate().map(|(i, x)| valid(i).then(|| "s".repeat((*x as u64 % 300) as usize))),
            )),
        ];
        for col in columns {
            let dt = col.data_type().clone();
            let batch = RecordBatch::try_from_iter([("c", col.clone())]).unwrap();
            let fast = RowHasher::all_columns(Algorithm::Sha256).canonical_bytes(&batch).unwrap();
            for (i, got) in fast.iter().enumerate() {
                let mut want = Vec::new();
                if encode_value(col.as_ref(), i, &mut want).is_err() {
                    panic!("reference encoder failed on {dt} row {i}");
                }
                assert_eq!(got, &want, "{dt} row {i}");
            }
        }
    }
}
