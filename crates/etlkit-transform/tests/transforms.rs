//! DedupByKey and Explode on messy input, alone and inside a pipeline (which enforces each
//! transform's declared output schema).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::DataType;
use etlkit_core::{Context, MemoryRejects, MemorySink, MemorySource, Pipeline, PipelineConfig, Transform};
use etlkit_transform::{
    DedupByKey, Explode, ExplodeConfig, ExtractField, ListFormat, OnBadList, RowNumbers, TransformError,
};

fn strings(cols: &[(&str, Vec<Option<&str>>)]) -> RecordBatch {
    RecordBatch::try_from_iter(
        cols.iter().map(|(n, v)| (*n, Arc::new(StringArray::from(v.clone())) as ArrayRef)),
    )
    .unwrap()
}

fn col(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let a = b.column_by_name(name).unwrap();
    let a = arrow_cast::cast(a, &DataType::Utf8).unwrap();
    a.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect()
}

fn jobs_config() -> ExplodeConfig {
    ExplodeConfig {
        column: "jobs".into(),
        fields: vec![
            ExtractField::text("company", "company").required(),
            ExtractField::text("start_date", "start_date"),
            ExtractField {
                field: "years".into(),
                column: "years".into(),
                data_type: DataType::Int64,
                required: false,
            },
        ],
        distinct: vec!["company".into(), "start_date".into()],
        origin: "people.csv".into(),
        row_column: Some("_row".into()),
        ..Default::default()
    }
}

#[test]
fn composite_keys_that_collide_as_joined_strings_stay_distinct() {
    // city "A|B" in country "C" and city "A" in country "B|C": one key as "city|country".
    let b = strings(&[
        ("city", vec![Some("A|B"), Some("A"), Some("A|B"), Some("A")]),
        ("country", vec![Some("C"), Some("B|C"), Some("C"), Some("B|C")]),
    ]);
    let ctx = Context::default();
    let d = DedupByKey::new(["city", "country"]);
    let out = d.apply(b, &ctx).unwrap().remove(0);
    assert_eq!(col(&out, "city"), [Some("A|B".into()), Some("A".into())]);
    assert_eq!(col(&out, "country"), [Some("C".into()), Some("B|C".into())]);
    assert_eq!((ctx.deduplicated(), d.distinct(), d.conflicts()), (2, 2, 0));
    // Empty strings and NULLs are different keys too; NULL keys pass through untouched.
    let b = strings(&[
        ("a", vec![Some(""), None, Some(""), None]),
        ("b", vec![Some("x"), Some("x"), Some("x"), Some("x")]),
    ]);
    let d = DedupByKey::new(["a", "b"]);
    let out = d.apply(b, &Context::default()).unwrap().remove(0);
    assert_eq!(out.num_rows(), 3, "one \"\" key kept, both NULL-key rows passed through");
}

#[test]
fn first_row_per_key_wins_across_batches_and_conflicts_are_counted() {
    let ctx = Context::default();
    let d = DedupByKey::new(["id"]).row_column("_row");
    let b1 = strings(&[
        ("id", vec![Some("1"), Some("2")]),
        ("name", vec![Some("Ann"), Some("Bob")]),
        ("_row", vec![Some("1"), Some("2")]),
    ]);
    let b2 = strings(&[
        ("id", vec![Some("1"), Some("2"), Some("3")]),
        ("name", vec![Some("Ann"), Some("Robert"), Some("Cy")]),
        ("_row", vec![Some("3"), Some("4"), Some("5")]),
    ]);
    assert_eq!(d.apply(b1, &ctx).unwrap()[0].num_rows(), 2);
    let out = d.apply(b2, &ctx).unwrap().remove(0);
    assert_eq!(col(&out, "name"), [Some("Cy".into())]);
    // Row 3 repeats row 1 exactly (the row column is ignored); row 4 conflicts with row 2.
    assert_eq!((d.deduplicated(), d.conflicts(), ctx.deduplicated()), (2, 1, 2));
    assert_eq!(d.properties(), etlkit_core::TransformProperties::ORDERED);
    assert_eq!(
        DedupByKey::new(["id"]).first_arrival().properties(),
        etlkit_core::TransformProperties::STATEFUL
    );
}

#[test]
fn many_keys_in_large_batches_keep_the_first_row_of_each_and_count_every_repeat() {
    // 5,000 keys (spread over every shard of the key set), in batches of 1,500 and 2,500 rows (more
    // than the 512 rows encoded at a time, and not a multiple of it): each key once, then each key
    // again, every 7th with a different name (a conflict), and NULL keys passed through.
    let ids: Vec<String> = (0..5000).map(|i| format!("L{i:07}")).collect();
    let names: Vec<String> = (0..5000).map(|i| format!("name {i}")).collect();
    let other: Vec<String> = (0..5000).map(|i| format!("other {i}")).collect();
    let ctx = Context::default();
    let d = DedupByKey::new(["id"]);
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("id", DataType::Utf8, true),
        arrow_schema::Field::new("name", DataType::Utf8, true),
    ]));
    let mut kept = Vec::new();
    let mut feed = |rows: Vec<(Option<&str>, &str)>| {
        for chunk in rows.chunks(if kept.is_empty() { 1500 } else { 2500 }) {
            let ids: ArrayRef = Arc::new(StringArray::from(chunk.iter().map(|r| r.0).collect::<Vec<_>>()));
            let names: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.1)));
            let b = RecordBatch::try_new(schema.clone(), vec![ids, names]).unwrap();
            let out = d.apply(b, &ctx).unwrap().remove(0);
            kept.extend(col(&out, "name").into_iter().map(Option::unwrap));
        }
    };
    let mut first: Vec<(Option<&str>, &str)> =
        ids.iter().zip(&names).map(|(i, n)| (Some(i.as_str()), n.as_str())).collect();
    first.insert(700, (None, "null key"));
    feed(first);
    let again: Vec<(Option<&str>, &str)> = (0..5000)
        .map(|i| (Some(ids[i].as_str()), if i % 7 == 0 { other[i].as_str() } else { names[i].as_str() }))
        .chain([(None, "null key")])
        .collect();
    feed(again);
    let mut want: Vec<String> = names.clone();
    want.insert(700, "null key".into());
    want.push("null key".into());
    assert_eq!(kept, want, "the first row of each key, in input order; NULL keys untouched");
    assert_eq!((d.distinct(), d.deduplicated(), d.conflicts()), (5000, 5000, 715));
    assert_eq!(ctx.deduplicated(), 5000);
}

#[test]
fn explode_json_objects_extracts_fields_and_drops_repeats_within_a_row() {
    let b = strings(&[
        ("id", vec![Some("p1"), Some("p2"), Some("p3"), Some("p4")]),
        (
            "jobs",
            vec![
                Some(
                    r#"[{"company":"Acme","start_date":"2020-01-01","years":3},{"company":"Globex","start_date":null},{"company":"Acme","start_date":"2020-01-01"}]"#,
                ),
                Some("[]"),
                None,
                Some(r#"[{"company":"Acme","start_date":"2021-05-01","extra":true}]"#),
            ],
        ),
        ("_row", vec![Some("1"), Some("2"), Some("3"), Some("4")]),
    ]);
    let ctx = Context::default();
    let e = Explode::new(jobs_config()).unwrap();
    let out = e.apply(b.clone(), &ctx).unwrap().remove(0);
    assert_eq!(out.schema(), e.output_schema(&b.schema()).unwrap());
    assert_eq!(col(&out, "id"), [Some("p1".into()), Some("p1".into()), Some("p4".into())]);
    assert_eq!(col(&out, "company"), [Some("Acme".into()), Some("Globex".into()), Some("Acme".into())]);
    assert_eq!(col(&out, "start_date"), [Some("2020-01-01".into()), None, Some("2021-05-01".into())]);
    assert_eq!(col(&out, "years"), [Some("3".into()), None, None]);
    assert!(out.column_by_name("jobs").is_none());
    assert_eq!(ctx.deduplicated(), 1, "the repeated Acme job of p1");
}

#[test]
fn float_keys_zero_and_minus_zero_are_one_key() {
    // 0.0 = -0.0 in SQL and Cypher: the second row would overwrite the first one's node.
    let b = RecordBatch::try_from_iter([
        ("k", Arc::new(arrow_array::Float64Array::from(vec![0.0, -0.0, 1.0])) as ArrayRef),
        ("v", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
    ])
    .unwrap();
    let ctx = Context::default();
    let out = DedupByKey::new(["k"]).apply(b, &ctx).unwrap().remove(0);
    assert_eq!(col(&out, "v"), [Some("a".into()), Some("c".into())]);
    assert_eq!(ctx.deduplicated(), 1);
}

#[test]
fn keys_in_a_null_typed_or_dictionary_column_that_are_null_pass_untouched() {
    // pyarrow types an all-None column as `null`: each of its values is a NULL key, so no row is a
    // repeat of another (arrow's `is_null` says false for those).
    let dict: arrow_array::DictionaryArray<arrow_array::types::Int32Type> =
        vec![Some("x"), None, None, Some("x")].into_iter().collect();
    let b = RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(vec!["1", "2", "3", "1"])) as ArrayRef),
        ("tenant", Arc::new(arrow_array::NullArray::new(4)) as ArrayRef),
        ("code", Arc::new(dict) as ArrayRef),
    ])
    .unwrap();
    for key in [vec!["tenant"], vec!["id", "tenant"], vec!["code"]] {
        let ctx = Context::default();
        let out = DedupByKey::new(key.clone()).apply(b.clone(), &ctx).unwrap().remove(0);
        let want = if key == ["code"] { 3 } else { 4 };
        assert_eq!((out.num_rows(), ctx.deduplicated()), (want, 4 - want as u64), "{key:?}");
    }
}

#[test]
fn json_numbers_keep_the_text_they_were_written_with() {
    let b = strings(&[
        ("id", vec![Some("a"), Some("b")]),
        (
            "ids",
            vec![
                Some(r#"["1.50", 12345678901234567890123, 1e3, 1.50, true, {"k": [1, 2]}, null]"#),
                Some("[]"),
            ],
        ),
    ]);
    let e =
        Explode::new(ExplodeConfig { column: "ids".into(), element: Some("v".into()), ..Default::default() })
            .unwrap();
    let out = e.apply(b, &Context::default()).unwrap().remove(0);
    let want = ["1.50", "12345678901234567890123", "1e3", "1.50", "true", r#"{"k": [1, 2]}"#];
    // (`null` is an empty element: skipped, as `skip_empty` is on by default.)
    assert_eq!(col(&out, "v"), want.iter().map(|v| Some(v.to_string())).collect::<Vec<_>>());
    // Object fields: a number into text as written; into Int64 only when written as an integer.
    let b = strings(&[("jobs", vec![Some(r#"[{"company": "A", "years": 3, "start_date": 2.50}]"#)])]);
    let e = Explode::new(ExplodeConfig { row_column: None, distinct: vec![], ..jobs_config() }).unwrap();
    let out = e.apply(b, &Context::default()).unwrap().remove(0);
    assert_eq!(
        (col(&out, "years"), col(&out, "start_date")),
        (vec![Some("3".into())], vec![Some("2.50".into())])
    );
    for years in ["3.0", "1e3", "12345678901234567890123"] {
        let list = format!(r#"[{{"company": "A", "years": {years}}}]"#);
        let b = strings(&[("jobs", vec![Some(list.as_str())])]);
        let e = Explode::new(ExplodeConfig { row_column: None, distinct: vec![], ..jobs_config() }).unwrap();
        let err = e.apply(b, &Context::default()).unwrap_err().to_string();
        assert!(err.contains("field `years` is a number, expected Int64"), "{years}: {err}");
    }
}

#[test]
fn explode_delimited_lists_trims_and_skips_empty_elements() {
    let b = strings(&[
        ("id", vec![Some("a"), Some("b")]),
        ("skills", vec![Some(" Rust ; SQL;;Rust"), Some(";")]),
    ]);
    let e = Explode::new(ExplodeConfig {
        column: "skills".into(),
        format: ListFormat::Delimited { delimiter: ";".into() },
        element: Some("skill".into()),
        distinct: vec!["skill".into()],
        keep_column: true,
        carry: Some(vec![]),
        ..Default::default()
    })
    .unwrap();
    let out = e.apply(b, &Context::default()).unwrap().remove(0);
    assert_eq!(col(&out, "skill"), [Some("Rust".into()), Some("SQL".into())]);
    assert_eq!(col(&out, "skills")[0].as_deref(), Some(" Rust ; SQL;;Rust"));
    assert!(out.column_by_name("id").is_none(), "not carried");
}

#[test]
fn a_malformed_list_names_origin_row_column_and_value() {
    let cases = [
        (r#"[{"company":"Acme""#, "not valid JSON"),
        (r#"{"company":"Acme"}"#, "not a JSON array (found an object)"),
        (r#"["Acme"]"#, "element 1 is a string, expected an object"),
        (r#"[{"company":""}]"#, "field `company` is missing or empty"),
        (r#"[{"company":"A","years":"three"}]"#, "field `years` is a string, expected Int64"),
    ];
    for (value, reason) in cases {
        let b = strings(&[
            ("id", vec![Some("ok"), Some("bad")]),
            ("jobs", vec![Some("[]"), Some(value)]),
            ("_row", vec![Some("6"), Some("7")]),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(arrow_schema::Schema::new(vec![
                arrow_schema::Field::new("id", DataType::Utf8, true),
                arrow_schema::Field::new("jobs", DataType::Utf8, true),
                arrow_schema::Field::new("_row", DataType::UInt64, true),
            ])),
            vec![
                b.column(0).clone(),
                b.column(1).clone(),
                arrow_cast::cast(b.column(2), &DataType::UInt64).unwrap(),
            ],
        )
        .unwrap();
        let e = Explode::new(jobs_config()).unwrap();
        let err = e.apply(b, &Context::default()).unwrap_err();
        let inner = err.find_source::<TransformError>().expect("a TransformError");
        let TransformError::Malformed { origin, line, column, value: v, reason: r } = inner else {
            panic!("{inner:?}")
        };
        assert_eq!(
            (origin.as_str(), *line, column.as_str(), v.as_str()),
            ("people.csv", Some(7), "jobs", value)
        );
        assert!(r.contains(reason), "{r:?} should contain {reason:?}");
        let text = err.report().to_string();
        assert!(text.contains("people.csv:7") && text.contains("`jobs`") && text.contains(reason), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pipeline_bad_lists_are_rejected_with_their_row_and_duplicates_counted() {
    let b = strings(&[
        ("id", vec![Some("p1"), Some("p2"), Some("p1"), Some("p3"), Some("p2")]),
        (
            "jobs",
            vec![
                Some(r#"[{"company":"Acme"}]"#),
                Some(r#"[{"company":"Initech"},{"company":"Umbrella"}]"#),
                Some(r#"[{"company":"Acme"}]"#),
                Some("[oops"),
                Some(r#"[{"company":"Other"}]"#), // conflicting duplicate of p2: dropped
            ],
        ),
    ]);
    let source = RowNumbers::new(Box::new(MemorySource::new(b.schema(), vec![b]).unwrap()), "_row").unwrap();
    let rejects = Arc::new(MemoryRejects::new());
    let sink = Arc::new(MemorySink::new());
    let dedup = Arc::new(DedupByKey::new(["id"]).row_column("_row"));
    let stats = Pipeline::new(source, sink.clone())
        .transform_arc(dedup.clone())
        .transform(Explode::new(ExplodeConfig { on_error: OnBadList::Reject, ..jobs_config() }).unwrap())
        .rejects(rejects.clone())
        .config(PipelineConfig { batch_size: 2, transform_concurrency: 1, ..Default::default() })
        .run()
        .await
        .unwrap();
    let out = sink.committed();
    let companies: Vec<Option<String>> = out.iter().flat_map(|b| col(b, "company")).collect();
    assert_eq!(companies, [Some("Acme".into()), Some("Initech".into()), Some("Umbrella".into())]);
    // Initech and Umbrella: one row exploded into two (1 added). Every row is accounted for.
    assert_eq!(
        (stats.rows_read, stats.rows_added, stats.rows_written, stats.rows_rejected, stats.rows_deduplicated),
        (5, 1, 3, 1, 2)
    );
    assert_eq!(
        stats.rows_read + stats.rows_added,
        stats.rows_written + stats.rows_rejected + stats.rows_deduplicated + stats.rows_filtered
    );
    assert_eq!(dedup.conflicts(), 1);
    let r = rejects.rows();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].origin.as_str(), r[0].line, r[0].column.as_deref(), r[0].value.as_deref()),
        ("memory", Some(4), Some("jobs"), Some("[oops"))
    );
    // The order-sensitive dedup refuses parallel transforms instead of silently serialising.
    let b = strings(&[("id", vec![Some("x")])]);
    let err = Pipeline::new(MemorySource::new(b.schema(), vec![b]).unwrap(), Arc::new(MemorySink::new()))
        .transform(DedupByKey::new(["id"]))
        .config(PipelineConfig { transform_concurrency: 2, ..Default::default() })
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("order-sensitive"), "{err}");
}
