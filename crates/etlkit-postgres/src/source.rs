//! [`PgSource`]: a table or query streamed out with `COPY (query) TO STDOUT (FORMAT binary)` and
//! decoded into Arrow batches as the bytes arrive — memory holds one batch being built plus one
//! network chunk, whatever the result size.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::{Buf, Bytes, BytesMut};
use etlkit_core::{BatchStream, Context, Source, Stage};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::PgPoolCopyExt;
use sqlx::{AssertSqlSafe, Column, Executor, PgPool, SqlSafeStr, Statement, TypeInfo};

use crate::catalog::{PgType, table_columns};
use crate::copy::HEADER;
use crate::error::{PgError, Result};
use crate::identifier::{TableRef, column_list};

/// What a [`PgSource`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceQuery {
    /// Every column of a table (its catalog gives exact types, e.g. `numeric(12,2)`).
    Table(TableRef),
    /// Any `SELECT` (types come from the server's description of the result; `numeric` without a
    /// known scale is read as text).
    Query(String),
}

/// Configuration of a [`PgSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSourceConfig {
    /// The table or query. Default: an empty query (must be set).
    pub query: SourceQuery,
    /// Rows per Arrow batch. Default: 65 536.
    pub batch_size: usize,
}

impl Default for PgSourceConfig {
    fn default() -> Self {
        PgSourceConfig { query: SourceQuery::Query(String::new()), batch_size: 65_536 }
    }
}

impl PgSourceConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(PgError::InvalidConfig { field: "batch_size", reason: "must be positive".into() });
        }
        match &self.query {
            SourceQuery::Query(q) if q.trim().is_empty() => {
                Err(PgError::InvalidConfig { field: "query", reason: "must not be empty".into() })
            }
            SourceQuery::Table(t) => t.validate("query"),
            _ => Ok(()),
        }
    }
}

/// Reads a table or query from PostgreSQL by binary COPY.
///
/// Type mapping: `boolean`, `smallint`/`integer`/`bigint`, `real`/`double precision` to the
/// matching Arrow types; `numeric(p,s)` (p ≤ 38) to `Decimal128(p,s)`, other `numeric` to `Utf8`;
/// `text`/`varchar`/`char`/`json`/`jsonb` to `Utf8`; `bytea` to `Binary`; `date` to `Date32`;
/// `time` to `Time64(µs)`; `timestamp` to `Timestamp(µs)`; `timestamptz` to `Timestamp(µs, "UTC")`;
/// `uuid` to `FixedSizeBinary(16)`; one-dimensional `smallint[]`, `integer[]`, `bigint[]`, `text[]`
/// to `List`. Other types fail in [`PgSource::new`] (cast them to text in the query).
pub struct PgSource {
    pool: PgPool,
    sql: String,
    name: String,
    schema: SchemaRef,
    kinds: Vec<PgType>,
    batch_size: usize,
}

impl std::fmt::Debug for PgSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSource")
            .field("sql", &self.sql)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn arrow_type(pg: &PgType) -> DataType {
    let list = |t| DataType::List(Arc::new(Field::new("item", t, true)));
    match pg {
        PgType::Bool => DataType::Boolean,
        PgType::Int2 => DataType::Int16,
        PgType::Int4 => DataType::Int32,
        PgType::Int8 => DataType::Int64,
        PgType::Float4 => DataType::Float32,
        PgType::Float8 => DataType::Float64,
        PgType::Numeric { precision_scale: Some((p, s)) } if *p <= 38 => DataType::Decimal128(*p, *s),
        PgType::Numeric { .. } | PgType::Text | PgType::Json | PgType::Jsonb => DataType::Utf8,
        PgType::Bytea => DataType::Binary,
        PgType::Date => DataType::Date32,
        PgType::Time => DataType::Time64(TimeUnit::Microsecond),
        PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        PgType::Uuid => DataType::FixedSizeBinary(16),
        PgType::Int2Array => list(DataType::Int16),
        PgType::Int4Array => list(DataType::Int32),
        PgType::Int8Array => list(DataType::Int64),
        PgType::TextArray => list(DataType::Utf8),
    }
}

impl PgSource {
    /// Looks up the result's columns and types (without reading rows).
    pub async fn new(pool: PgPool, config: PgSourceConfig) -> Result<Self> {
        config.validate()?;
        let (sql, name, cols): (String, String, Vec<(String, PgType, bool)>) = match &config.query {
            SourceQuery::Table(t) => {
                let mut conn = pool.acquire().await.map_err(|e| PgError::db("connecting", t.quoted(), e))?;
                let table = table_columns(&mut conn, t).await?;
                let mut cols = Vec::new();
                for c in table {
                    let pg = c.pg_type.ok_or_else(|| PgError::UnsupportedType {
                        column: c.name.clone(),
                        reason: format!(
                            "PostgreSQL type `{}` cannot be read; cast it to text in a query",
                            c.declared
                        ),
                    })?;
                    cols.push((c.name, pg, !c.not_null));
                }
                let list = column_list(cols.iter().map(|c| c.0.as_str()));
                (format!("SELECT {list} FROM {}", t.quoted()), format!("postgres:{}", t.quoted()), cols)
            }
            SourceQuery::Query(q) => {
                let d = (&pool)
                    .prepare(AssertSqlSafe(q.clone()).into_sql_str())
                    .await
                    .map_err(|e| PgError::db("describing", q.clone(), e))?;
                let mut cols = Vec::new();
                for c in d.columns() {
                    let ti = c.type_info();
                    let oid = ti.oid().map(|o| o.0).unwrap_or(0);
                    let pg = PgType::from_oid(oid, -1).ok_or_else(|| PgError::UnsupportedType {
                        column: c.name().to_owned(),
                        reason: format!("PostgreSQL type `{}` cannot be read; cast it to text", ti.name()),
                    })?;
                    cols.push((c.name().to_owned(), pg, true));
                }
                (q.clone(), "postgres:query".to_owned(), cols)
            }
        };
        let schema = Arc::new(Schema::new(
            cols.iter().map(|(n, pg, nullable)| Field::new(n, arrow_type(pg), *nullable)).collect::<Vec<_>>(),
        ));
        Ok(PgSource {
            pool,
            sql,
            name,
            schema,
            kinds: cols.into_iter().map(|c| c.1).collect(),
            batch_size: config.batch_size,
        })
    }

    /// The `COPY` statement this source runs.
    pub fn copy_statement(&self) -> String {
        format!("COPY ({}) TO STDOUT (FORMAT binary)", self.sql)
    }
}

impl Source for PgSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn into_stream(self: Box<Self>, _ctx: Context) -> BatchStream {
        let name = self.name.clone();
        let state =
            Decoder { source: *self, input: None, buf: BytesMut::new(), header_seen: false, ended: false };
        futures::stream::try_unfold(state, move |mut st| {
            let name = name.clone();
            async move {
                match st.next_batch().await {
                    Ok(Some(b)) => Ok(Some((b, st))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.into_stage(Stage::Source, name)),
                }
            }
        })
        .boxed()
    }
}

struct Decoder {
    source: PgSource,
    input: Option<BoxStream<'static, sqlx::Result<Bytes>>>,
    buf: BytesMut,
    header_seen: bool,
    ended: bool,
}

impl Decoder {
    fn err(&self, reason: impl Into<String>) -> PgError {
        PgError::Decode { query: self.source.sql.clone(), reason: reason.into() }
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.ended {
            return Ok(None);
        }
        if self.input.is_none() {
            let stmt = self.source.copy_statement();
            let s = self
                .source
                .pool
                .copy_out_raw(&stmt)
                .await
                .map_err(|e| PgError::db("starting COPY TO", self.source.sql.clone(), e))?;
            self.input = Some(s);
        }
        let mut builders: Vec<ColBuilder> =
            self.source.kinds.iter().map(|k| ColBuilder::new(k, &self.source.schema)).collect();
        for (b, f) in builders.iter_mut().zip(self.source.schema.fields()) {
            b.set_field(f);
        }
        let mut rows = 0usize;
        let mut trailer = false;
        while rows < self.source.batch_size && !trailer {
            if !self.header_seen {
                if self.buf.len() < HEADER.len() {
                    if !self.fill().await? {
                        return Err(self.err("stream ended before the header"));
                    }
                    continue;
                }
                if self.buf[..11] != HEADER[..11] {
                    return Err(self.err("bad binary COPY signature"));
                }
                let ext = u32::from_be_bytes(self.buf[15..19].try_into().expect("4 bytes")) as usize;
                if self.buf.len() < 19 + ext {
                    if !self.fill().await? {
                        return Err(self.err("stream ended inside the header"));
                    }
                    continue;
                }
                self.buf.advance(19 + ext);
                self.header_seen = true;
            }
            match tuple_len(&self.buf, builders.len()).map_err(|r| self.err(r))? {
                Some(TupleLen::Trailer) => {
                    trailer = true;
                    self.ended = true;
                }
                Some(TupleLen::Row(len)) => {
                    let tuple = self.buf.split_to(len).freeze();
                    let mut p = 2usize;
                    for (i, b) in builders.iter_mut().enumerate() {
                        let l = i32::from_be_bytes(tuple[p..p + 4].try_into().expect("4 bytes"));
                        p += 4;
                        if l < 0 {
                            b.append_null();
                        } else {
                            let data = &tuple[p..p + l as usize];
                            p += l as usize;
                            b.append(data).map_err(|r| {
                                self.err(format!("column `{}`: {r}", self.source.schema.field(i).name()))
                            })?;
                        }
                    }
                    rows += 1;
                }
                None => {
                    if !self.fill().await? {
                        return Err(self.err("stream ended inside a row (no trailer)"));
                    }
                }
            }
        }
        if trailer {
            // Drain the end of the stream so the connection goes back to the pool clean.
            while self.fill().await? {}
            self.input = None;
        }
        if rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = builders.into_iter().map(ColBuilder::finish).collect();
        RecordBatch::try_new(self.source.schema.clone(), arrays)
            .map(Some)
            .map_err(|source| PgError::Arrow { column: "*".into(), source })
    }

    /// Reads the next chunk into `buf`; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool> {
        let Some(input) = self.input.as_mut() else { return Ok(false) };
        match input.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(PgError::db("reading COPY data", self.source.sql.clone(), e)),
            None => Ok(false),
        }
    }
}

enum TupleLen {
    Row(usize),
    Trailer,
}

/// The byte length of the tuple at the start of `buf`, `None` when incomplete.
fn tuple_len(buf: &[u8], ncols: usize) -> std::result::Result<Option<TupleLen>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let n = i16::from_be_bytes([buf[0], buf[1]]);
    if n == -1 {
        return Ok(Some(TupleLen::Trailer));
    }
    if n as usize != ncols {
        return Err(format!("tuple has {n} fields, expected {ncols}"));
    }
    let mut p = 2usize;
    for _ in 0..ncols {
        if buf.len() < p + 4 {
            return Ok(None);
        }
        let l = i32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes"));
        p += 4;
        if l > 0 {
            p += l as usize;
        }
    }
    Ok((buf.len() >= p).then_some(TupleLen::Row(p)))
}

/// Days between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between 1970-01-01 and 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

enum ColBuilder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    NumericText(StringBuilder),
    Text(StringBuilder, bool),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
    Uuid(FixedSizeBinaryBuilder),
    ListI16(ListBuilder<Int16Builder>),
    ListI32(ListBuilder<Int32Builder>),
    ListI64(ListBuilder<Int64Builder>),
    ListText(ListBuilder<StringBuilder>),
}

type R<T = ()> = std::result::Result<T, String>;

fn fixed<const N: usize>(d: &[u8]) -> R<[u8; N]> {
    d.try_into().map_err(|_| format!("expected {N} bytes, got {}", d.len()))
}

impl ColBuilder {
    fn new(pg: &PgType, _schema: &Schema) -> Self {
        match pg {
            PgType::Bool => ColBuilder::Bool(BooleanBuilder::new()),
            PgType::Int2 => ColBuilder::I16(Int16Builder::new()),
            PgType::Int4 => ColBuilder::I32(Int32Builder::new()),
            PgType::Int8 => ColBuilder::I64(Int64Builder::new()),
            PgType::Float4 => ColBuilder::F32(Float32Builder::new()),
            PgType::Float8 => ColBuilder::F64(Float64Builder::new()),
            PgType::Numeric { precision_scale: Some((p, s)) } if *p <= 38 => ColBuilder::Decimal(
                Decimal128Builder::new().with_precision_and_scale(*p, *s).expect("valid precision"),
                *s,
            ),
            PgType::Numeric { .. } => ColBuilder::NumericText(StringBuilder::new()),
            PgType::Text | PgType::Json => ColBuilder::Text(StringBuilder::new(), false),
            PgType::Jsonb => ColBuilder::Text(StringBuilder::new(), true),
            PgType::Bytea => ColBuilder::Bytes(BinaryBuilder::new()),
            PgType::Date => ColBuilder::Date(Date32Builder::new()),
            PgType::Time => ColBuilder::Time(Time64MicrosecondBuilder::new()),
            PgType::Timestamp => ColBuilder::Ts(TimestampMicrosecondBuilder::new()),
            PgType::Timestamptz => ColBuilder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            PgType::Uuid => ColBuilder::Uuid(FixedSizeBinaryBuilder::new(16)),
            PgType::Int2Array => ColBuilder::ListI16(ListBuilder::new(Int16Builder::new())),
            PgType::Int4Array => ColBuilder::ListI32(ListBuilder::new(Int32Builder::new())),
            PgType::Int8Array => ColBuilder::ListI64(ListBuilder::new(Int64Builder::new())),
            PgType::TextArray => ColBuilder::ListText(ListBuilder::new(StringBuilder::new())),
        }
    }

    /// Makes the list builders produce the schema's item field (nullable `item`).
    fn set_field(&mut self, field: &Field) {
        let item = match field.data_type() {
            DataType::List(f) => f.clone(),
            _ => return,
        };
        let replace = |b: &mut ColBuilder| match b {
            ColBuilder::ListI16(l) => *l = ListBuilder::new(Int16Builder::new()).with_field(item.clone()),
            ColBuilder::ListI32(l) => *l = ListBuilder::new(Int32Builder::new()).with_field(item.clone()),
            ColBuilder::ListI64(l) => *l = ListBuilder::new(Int64Builder::new()).with_field(item.clone()),
            ColBuilder::ListText(l) => *l = ListBuilder::new(StringBuilder::new()).with_field(item.clone()),
            _ => {}
        };
        replace(self);
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::I16(b) => b.append_null(),
            ColBuilder::I32(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F32(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Decimal(b, _) => b.append_null(),
            ColBuilder::NumericText(b) | ColBuilder::Text(b, _) => b.append_null(),
            ColBuilder::Bytes(b) => b.append_null(),
            ColBuilder::Date(b) => b.append_null(),
            ColBuilder::Time(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
            ColBuilder::Uuid(b) => b.append_null(),
            ColBuilder::ListI16(b) => b.append_null(),
            ColBuilder::ListI32(b) => b.append_null(),
            ColBuilder::ListI64(b) => b.append_null(),
            ColBuilder::ListText(b) => b.append_null(),
        }
    }

    fn append(&mut self, d: &[u8]) -> R {
        match self {
            ColBuilder::Bool(b) => b.append_value(fixed::<1>(d)?[0] != 0),
            ColBuilder::I16(b) => b.append_value(i16::from_be_bytes(fixed(d)?)),
            ColBuilder::I32(b) => b.append_value(i32::from_be_bytes(fixed(d)?)),
            ColBuilder::I64(b) => b.append_value(i64::from_be_bytes(fixed(d)?)),
            ColBuilder::F32(b) => b.append_value(f32::from_be_bytes(fixed(d)?)),
            ColBuilder::F64(b) => b.append_value(f64::from_be_bytes(fixed(d)?)),
            ColBuilder::Decimal(b, s) => b.append_value(numeric_to_i128(d, *s)?),
            ColBuilder::NumericText(b) => b.append_value(numeric_to_string(d)?),
            ColBuilder::Text(b, jsonb) => {
                let d = if *jsonb {
                    match d.split_first() {
                        Some((1, rest)) => rest,
                        _ => return Err("unknown jsonb version".into()),
                    }
                } else {
                    d
                };
                b.append_value(std::str::from_utf8(d).map_err(|e| e.to_string())?)
            }
            ColBuilder::Bytes(b) => b.append_value(d),
            ColBuilder::Date(b) => {
                let v = i32::from_be_bytes(fixed(d)?);
                if v == i32::MAX || v == i32::MIN {
                    return Err("infinite date cannot be represented in Arrow".into());
                }
                b.append_value(v + PG_EPOCH_DAYS)
            }
            ColBuilder::Time(b) => b.append_value(i64::from_be_bytes(fixed(d)?)),
            ColBuilder::Ts(b) => {
                let v = i64::from_be_bytes(fixed(d)?);
                if v == i64::MAX || v == i64::MIN {
                    return Err("infinite timestamp cannot be represented in Arrow".into());
                }
                b.append_value(v + PG_EPOCH_MICROS)
            }
            ColBuilder::Uuid(b) => b.append_value(d).map_err(|e| e.to_string())?,
            ColBuilder::ListI16(b) => {
                append_array(d, |e| {
                    match e {
                        Some(e) => b.values().append_value(i16::from_be_bytes(fixed(e)?)),
                        None => b.values().append_null(),
                    }
                    Ok(())
                })?;
                b.append(true)
            }
            ColBuilder::ListI32(b) => {
                append_array(d, |e| {
                    match e {
                        Some(e) => b.values().append_value(i32::from_be_bytes(fixed(e)?)),
                        None => b.values().append_null(),
                    }
                    Ok(())
                })?;
                b.append(true)
            }
            ColBuilder::ListI64(b) => {
                append_array(d, |e| {
                    match e {
                        Some(e) => b.values().append_value(i64::from_be_bytes(fixed(e)?)),
                        None => b.values().append_null(),
                    }
                    Ok(())
                })?;
                b.append(true)
            }
            ColBuilder::ListText(b) => {
                append_array(d, |e| {
                    match e {
                        Some(e) => {
                            b.values().append_value(std::str::from_utf8(e).map_err(|e| e.to_string())?)
                        }
                        None => b.values().append_null(),
                    }
                    Ok(())
                })?;
                b.append(true)
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        use arrow_array::builder::ArrayBuilder;
        match self {
            ColBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColBuilder::I16(mut b) => Arc::new(b.finish()),
            ColBuilder::I32(mut b) => Arc::new(b.finish()),
            ColBuilder::I64(mut b) => Arc::new(b.finish()),
            ColBuilder::F32(mut b) => Arc::new(b.finish()),
            ColBuilder::F64(mut b) => Arc::new(b.finish()),
            ColBuilder::Decimal(mut b, _) => Arc::new(b.finish()),
            ColBuilder::NumericText(mut b) | ColBuilder::Text(mut b, _) => Arc::new(b.finish()),
            ColBuilder::Bytes(mut b) => Arc::new(b.finish()),
            ColBuilder::Date(mut b) => Arc::new(b.finish()),
            ColBuilder::Time(mut b) => Arc::new(b.finish()),
            ColBuilder::Ts(mut b) => Arc::new(b.finish()),
            ColBuilder::Uuid(mut b) => ArrayBuilder::finish(&mut b),
            ColBuilder::ListI16(mut b) => Arc::new(b.finish()),
            ColBuilder::ListI32(mut b) => Arc::new(b.finish()),
            ColBuilder::ListI64(mut b) => Arc::new(b.finish()),
            ColBuilder::ListText(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Walks a one-dimensional binary array value, calling `each` per element (`None` for NULL).
fn append_array(d: &[u8], mut each: impl FnMut(Option<&[u8]>) -> R) -> R {
    let int = |p: usize| -> R<i32> {
        d.get(p..p + 4)
            .map(|s| i32::from_be_bytes(s.try_into().expect("4 bytes")))
            .ok_or_else(|| "truncated array".to_owned())
    };
    let ndim = int(0)?;
    if ndim == 0 {
        return Ok(());
    }
    if ndim != 1 {
        return Err(format!("{ndim}-dimensional arrays are not supported"));
    }
    let len = int(12)?;
    let mut p = 20usize;
    for _ in 0..len {
        let l = int(p)?;
        p += 4;
        if l < 0 {
            each(None)?;
        } else {
            let e = d.get(p..p + l as usize).ok_or("truncated array element")?;
            p += l as usize;
            each(Some(e))?;
        }
    }
    Ok(())
}

struct NumericParts {
    weight: i16,
    neg: bool,
    dscale: u16,
    digits: Vec<i16>,
}

fn numeric_parts(d: &[u8]) -> R<NumericParts> {
    if d.len() < 8 {
        return Err("truncated numeric".into());
    }
    let nd = u16::from_be_bytes([d[0], d[1]]) as usize;
    let weight = i16::from_be_bytes([d[2], d[3]]);
    let sign = u16::from_be_bytes([d[4], d[5]]);
    let dscale = u16::from_be_bytes([d[6], d[7]]);
    if sign == 0xC000 {
        return Err("NaN".into());
    }
    if sign == 0xD000 || sign == 0xF000 {
        return Err("Infinity".into());
    }
    if d.len() < 8 + 2 * nd {
        return Err("truncated numeric".into());
    }
    let digits = (0..nd).map(|i| i16::from_be_bytes([d[8 + 2 * i], d[9 + 2 * i]])).collect();
    Ok(NumericParts { weight, neg: sign == 0x4000, dscale, digits })
}

fn numeric_to_i128(d: &[u8], scale: i8) -> R<i128> {
    let n = numeric_parts(d).map_err(|e| format!("numeric {e} cannot be stored as a decimal"))?;
    let mut acc: i128 = 0;
    for (i, &digit) in n.digits.iter().enumerate() {
        let e = (n.weight as i32 - i as i32) * 4 + scale as i32;
        let v = if e >= 0 {
            10i128.checked_pow(e as u32).and_then(|p| (digit as i128).checked_mul(p))
        } else {
            10i128.checked_pow((-e) as u32).map(|p| digit as i128 / p).or(Some(0))
        };
        acc = v.and_then(|v| acc.checked_add(v)).ok_or("numeric overflows Decimal128")?;
    }
    Ok(if n.neg { -acc } else { acc })
}

fn numeric_to_string(d: &[u8]) -> R<String> {
    use std::fmt::Write;
    let n = match numeric_parts(d) {
        Ok(n) => n,
        Err(special) if special == "NaN" || special == "Infinity" => {
            let sign = u16::from_be_bytes([d[4], d[5]]);
            return Ok(match sign {
                0xC000 => "NaN",
                0xD000 => "Infinity",
                _ => "-Infinity",
            }
            .to_owned());
        }
        Err(e) => return Err(e),
    };
    let digit = |i: i32| if i >= 0 && (i as usize) < n.digits.len() { n.digits[i as usize] } else { 0 };
    let mut s = String::new();
    if n.neg {
        s.push('-');
    }
    if n.weight < 0 {
        s.push('0');
    } else {
        for i in 0..=n.weight as i32 {
            if i == 0 {
                let _ = write!(s, "{}", digit(i));
            } else {
                let _ = write!(s, "{:04}", digit(i));
            }
        }
    }
    if n.dscale > 0 {
        let mut frac = String::new();
        let mut i = n.weight as i32 + 1;
        while frac.len() < n.dscale as usize {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(n.dscale as usize);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(weight: i16, neg: bool, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_decodes_to_text_and_decimal() {
        // 12345.678 = digits [1, 2345, 6780], weight 1, dscale 3
        let d = numeric(1, false, 3, &[1, 2345, 6780]);
        assert_eq!(numeric_to_string(&d).unwrap(), "12345.678");
        assert_eq!(numeric_to_i128(&d, 3).unwrap(), 12_345_678);
        // -0.05 = digits [500], weight -1, dscale 2
        let d = numeric(-1, true, 2, &[500]);
        assert_eq!(numeric_to_string(&d).unwrap(), "-0.05");
        assert_eq!(numeric_to_i128(&d, 2).unwrap(), -5);
        // 10000 = digits [1], weight 1, dscale 0
        let d = numeric(1, false, 0, &[1]);
        assert_eq!(numeric_to_string(&d).unwrap(), "10000");
    }
}
