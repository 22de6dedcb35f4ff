//! A typical user-record job, used by `examples/pipeline_throughput.rs` and `benches/pipeline.rs`:
//! records with id, username, email, age, location id and a few counters come in; a display name and
//! two computed metrics go out.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{Context, Transform};

/// Schema of the incoming user records.
pub fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("username", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("age", DataType::Int32, true),
        Field::new("location_id", DataType::Int32, false),
        Field::new("logins", DataType::Int64, false),
        Field::new("posts", DataType::Int64, false),
        Field::new("comments", DataType::Int64, false),
    ]))
}

/// `rows` user records in batches of `batch_rows`, deterministic.
pub fn user_batches(rows: usize, batch_rows: usize) -> Vec<RecordBatch> {
    let schema = input_schema();
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = batch_rows.min(rows - start);
        let ids = start as i64..(start + n) as i64;
        let mut user = StringBuilder::with_capacity(n, n * 12);
        let mut mail = StringBuilder::with_capacity(n, n * 24);
        for i in ids.clone() {
            write!(user, "user{i:07}").unwrap();
            user.append_value("");
            write!(mail, "user{i:07}@example.org").unwrap();
            mail.append_value("");
        }
        let mix = |i: i64, m: i64| (i.wrapping_mul(2_654_435_761) >> 7).rem_euclid(m);
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(user.finish()),
            Arc::new(mail.finish()),
            Arc::new(
                ids.clone().map(|i| (i % 97 != 0).then_some(18 + mix(i, 60) as i32)).collect::<Int32Array>(),
            ),
            Arc::new(Int32Array::from_iter_values(ids.clone().map(|i| mix(i, 265) as i32 + 1))),
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| mix(i, 1000)))),
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| mix(i + 1, 50)))),
            Arc::new(Int64Array::from_iter_values(ids.map(|i| mix(i + 2, 200)))),
        ];
        out.push(RecordBatch::try_new(schema.clone(), columns).expect("valid user batch"));
        start += n;
    }
    out
}

/// Appends `display_name` ("username <email>"), `engagement` (posts * 3 + comments) / (logins + 1)
/// and `age_norm` (age / 100, null stays null).
pub struct EnrichUsers {
    output: SchemaRef,
}

impl Default for EnrichUsers {
    fn default() -> Self {
        Self::new()
    }
}

impl EnrichUsers {
    /// The transform for [`input_schema`] input.
    pub fn new() -> Self {
        let mut fields: Vec<Field> = input_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("display_name", DataType::Utf8, false));
        fields.push(Field::new("engagement", DataType::Float64, false));
        fields.push(Field::new("age_norm", DataType::Float64, true));
        EnrichUsers { output: Arc::new(Schema::new(fields)) }
    }
}

impl Transform for EnrichUsers {
    fn name(&self) -> &str {
        "enrich-users"
    }

    fn output_schema(&self, _input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(self.output.clone())
    }

    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let col = |i: usize| batch.column(i).as_any();
        let user = col(1).downcast_ref::<StringArray>().expect("username is Utf8");
        let mail = col(2).downcast_ref::<StringArray>().expect("email is Utf8");
        let age = col(3).downcast_ref::<Int32Array>().expect("age is Int32");
        let logins = col(5).downcast_ref::<Int64Array>().expect("logins is Int64");
        let posts = col(6).downcast_ref::<Int64Array>().expect("posts is Int64");
        let comments = col(7).downcast_ref::<Int64Array>().expect("comments is Int64");
        let n = batch.num_rows();

        let bytes = user.value_data().len() + mail.value_data().len() + 3 * n;
        let mut display = StringBuilder::with_capacity(n, bytes);
        for i in 0..n {
            display.write_str(user.value(i)).expect("in-memory write");
            display.write_str(" <").expect("in-memory write");
            display.write_str(mail.value(i)).expect("in-memory write");
            display.append_value(">");
        }
        let engagement: Float64Array = logins
            .values()
            .iter()
            .zip(posts.values().iter().zip(comments.values().iter()))
            .map(|(&l, (&p, &c))| (p * 3 + c) as f64 / (l + 1) as f64)
            .collect::<Vec<f64>>()
            .into();
        let age_norm: Float64Array = arrow_array::PrimitiveArray::new(
            age.values().iter().map(|&a| a as f64 / 100.0).collect(),
            age.nulls().cloned(),
        );
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(display.finish()));
        columns.push(Arc::new(engagement));
        columns.push(Arc::new(age_norm));
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }
}
