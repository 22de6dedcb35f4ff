//! The star job on a synthetic retail schema against a real, throwaway PostgreSQL (etlkit-testkit;
//! `DATABASE_URL` reused when set): role-playing dimensions, an attribute lookup, the date
//! dimension, composite keys, foreign keys, facts-only loads, re-runs, passes, missing columns.

mod common;

use arrow_schema::{DataType, Field};
use common::*;
use etlkit_postgres::TableRef;
use etlkit_star::{
    Algorithm, AttributeLookup, BulkWhen, DedupStrategy, DimensionConfig, FactConfig, Input, InputsConfig,
    StarError, StarJob, StarJobConfig, TargetColumn,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retail_job_loads_roles_lookups_dates_and_foreign_keys_and_a_rerun_inserts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(dir.path());
    let url = fresh_url().await;
    let job = StarJob::new(retail_job(dir.path(), true)).unwrap();
    let first = job.run(&url).await.unwrap();
    assert_eq!(
        (first.files, first.rows_read, first.inserted, first.duplicates, first.rejected),
        (2, 720, 600, 120, 0)
    );
    assert_eq!(first.fact_rows, 600);
    assert_eq!(first.passes, 1);
    assert!(!first.bulk);
    assert_eq!(first.lookup_rows, 10);
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders").await, 600);
    assert_eq!(scalar(&p, "SELECT count(DISTINCT order_id) FROM fact_order").await, 600);
    // Role-playing cities: 5 customer cities and 6 shipping cities are 6 members (+ unknown); NULL
    // shipping cities went to the unknown member.
    assert_eq!(first.members_created["dim_city"], 6);
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_city").await, 7);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order WHERE ship_city_key = -1").await, 55);
    let wrong_roles = scalar(
        &p,
        "SELECT count(*) FROM fact_order f JOIN orders o USING (row_hash) \
         JOIN dim_city c ON c.city_key = f.customer_city_key LEFT JOIN dim_city s ON s.city_key = f.ship_city_key \
         WHERE c.city <> o.customer_city OR s.city IS DISTINCT FROM o.ship_city",
    )
    .await;
    assert_eq!(wrong_roles, 0);
    // Customers carry the city attribute of the role that created them.
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_customer WHERE city IS NOT NULL").await, 23);
    // The lookup made all ten products (with names) before the load: the load created none.
    assert_eq!(first.members_created["dim_product"], 0);
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_product WHERE name LIKE 'Product %'").await, 10);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM fact_order f JOIN dim_product d USING (product_key) WHERE d.category = 'food'")
            .await,
        scalar(&p, "SELECT count(*) FROM orders WHERE right(product_code, 1)::int % 2 = 0").await
    );
    // Composite keys with `|` inside stay distinct: ("A|B", "C") and ("A", "B|C").
    assert_eq!(first.members_created["dim_store"], 3);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM fact_order f JOIN dim_store s USING (store_key) WHERE s.name = 'A'")
            .await,
        200
    );
    // The date dimension: order dates Jan 1 – Feb 9 and ship dates two days later: 42 days.
    assert_eq!(first.members_created["dim_date"], 42);
    let jan_1: (i16, i16, i16, i16, i16) = etlkit_postgres::sqlx::query_as(
        "SELECT year, quarter, month, day, iso_weekday FROM dim_date WHERE date = '2024-01-01'",
    )
    .fetch_one(&p)
    .await
    .unwrap();
    assert_eq!(jan_1, (2024, 1, 1, 1, 1));
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM dim_date WHERE iso_weekday <> extract(isodow FROM date)").await,
        0
    );
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM fact_order f JOIN dim_date d ON d.date_key = f.order_date_key JOIN orders o USING (row_hash) WHERE d.date <> o.ordered_at::date").await,
        0
    );
    // One foreign key per role.
    assert_eq!(
        scalar(
            &p,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'fact_order'::regclass AND contype = 'f'"
        )
        .await,
        7
    );

    // The same job again: nothing new anywhere, and the report says so.
    let again = job.run(&url).await.unwrap();
    assert_eq!((again.rows_read, again.inserted, again.duplicates), (720, 0, 720));
    assert!(again.members_created.values().all(|n| *n == 0), "{:?}", again.members_created);
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders").await, 600);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order").await, 600);

    // Hashes made another way would not find these rows: refused.
    let mut other = retail_job(dir.path(), true);
    other.row_hash.algorithm = Algorithm::Blake3;
    let err = StarJob::new(other).unwrap().run(&url).await.unwrap_err();
    assert!(matches!(err, StarError::HashMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facts_only_job_keeps_the_row_hash_unique_in_the_fact_table() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(dir.path());
    let url = fresh_url().await;
    let job = StarJob::new(retail_job(dir.path(), false)).unwrap();
    let first = job.run(&url).await.unwrap();
    assert_eq!((first.inserted, first.fact_rows, first.duplicates), (600, 600, 120));
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'").await, 0);
    assert_eq!(scalar(&p, "SELECT count(DISTINCT row_hash) FROM fact_order").await, 600);
    assert_eq!(
        scalar(
            &p,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'fact_order'::regclass AND contype = 'u'"
        )
        .await,
        1
    );
    let again = job.run(&url).await.unwrap();
    assert_eq!(again.inserted, 0);
    // Database de-duplication merges against the fact table's constraint.
    let mut merge = retail_job(dir.path(), false);
    merge.dedup = DedupStrategy::Database;
    let merged = StarJob::new(merge).unwrap().run(&url).await.unwrap();
    assert_eq!((merged.inserted, merged.duplicates, merged.passes), (0, 720, 0));
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order").await, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rows_view_shows_exactly_the_rows_a_rows_table_stores() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(dir.path());
    let url = fresh_url().await;
    let p = pool(&url).await;
    // The same input stored (`orders`, `fact_order`) and viewed (`orders_v` over `fact_order_v`,
    // which keeps the columns no one-column key gives back as degenerate attributes).
    let stored = StarJob::new(retail_job(dir.path(), true)).unwrap().run(&url).await.unwrap();
    let mut cfg = retail_view_job(dir.path());
    cfg.fact.table = etlkit_star::TableRef::new("fact_order_v");
    cfg.rows_view = Some(etlkit_star::TableRef::new("orders_v"));
    cfg.bulk.when = BulkWhen::Always;
    let viewed = StarJob::new(cfg.clone()).unwrap().run(&url).await.unwrap();
    assert_eq!((stored.inserted, viewed.inserted, viewed.duplicates, viewed.bulk), (600, 600, 120, true));
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders_v").await, 600);
    // Every value, NULLs from the unknown member included, and every row hash: no row differs.
    for (a, b) in [("orders", "orders_v"), ("orders_v", "orders")] {
        let sql = format!("SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) d");
        assert_eq!(scalar(&p, &sql).await, 0, "{a} - {b}");
    }
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders_v WHERE ship_city IS NULL").await, 55);
    assert_eq!(scalar(&p, "SELECT count(*) FROM pg_views WHERE viewname = 'orders_v'").await, 1);
    // The bulk run rebuilt the row-hash constraint on the fact table; a re-run adds nothing.
    assert_eq!(
        scalar(
            &p,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'fact_order_v'::regclass AND contype = 'u'"
        )
        .await,
        1
    );
    // A re-run adds nothing, and leaves the unchanged view alone: a query reading it meanwhile (its
    // transaction open) neither blocks the run nor is blocked.
    let mut reader = p.begin().await.unwrap();
    let seen: i64 = etlkit_postgres::sqlx::query_scalar("SELECT count(*) FROM orders_v")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(seen, 600);
    let rerun = StarJob::new(cfg.clone()).unwrap();
    let again = tokio::time::timeout(std::time::Duration::from_secs(120), rerun.run(&url))
        .await
        .expect("the re-run waited for a reader of the view")
        .unwrap();
    reader.rollback().await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 720));
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders_v").await, 600);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM pg_description WHERE objoid = 'orders_v'::regclass AND description LIKE 'etlkit-star rows view: SELECT %'").await,
        1
    );
    // A table in the view's place is not replaced.
    cfg.rows_view = Some(etlkit_star::TableRef::new("orders"));
    let err = StarJob::new(cfg).unwrap().run(&url).await.unwrap_err();
    assert!(err.to_string().contains("\"orders\" exists and is not a view"), "{err}");
    assert_eq!(scalar(&p, "SELECT count(*) FROM orders").await, 600);
    // Storing the rows now would not know the 600 facts (they would all load again): refused, as
    // is a rows table in the view's place.
    let mut stored = retail_job(dir.path(), true);
    stored.fact.table = etlkit_star::TableRef::new("fact_order_v");
    stored.rows_table = Some(etlkit_star::TableRef::new("orders_v2"));
    let err = StarJob::new(stored.clone()).unwrap().run(&url).await.unwrap_err();
    assert!(err.to_string().contains("was loaded without a rows table"), "{err}");
    stored.rows_table = Some(etlkit_star::TableRef::new("orders_v"));
    let err = StarJob::new(stored).unwrap().run(&url).await.unwrap_err();
    assert!(err.to_string().contains("\"orders_v\" exists and is not a table"), "{err}");
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order_v").await, 600);
    assert_eq!(scalar(&p, "SELECT count(*) FROM pg_tables WHERE tablename = 'orders_v2'").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_and_bulk_loads_store_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(dir.path());
    let url = fresh_url().await;
    let mut cfg = retail_job(dir.path(), true);
    cfg.dedup = DedupStrategy::Memory { passes: 3 };
    cfg.bulk.when = BulkWhen::Always;
    let p = pool(&url).await;
    exec(&p, "CREATE TABLE fact_order_dummy ()").await;
    let first = StarJob::new(cfg.clone()).unwrap().run(&url).await.unwrap();
    assert_eq!((first.passes, first.bulk), (3, true));
    assert_eq!((first.rows_read, first.inserted, first.duplicates, first.rejected), (720, 600, 120, 0));
    assert_eq!(scalar(&p, "SELECT count(DISTINCT row_hash) FROM orders").await, 600);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order").await, 600);
    // The bulk load rebuilt the constraint and resumed autovacuum.
    assert_eq!(
        scalar(
            &p,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'u'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'fact_order') AND reloptions IS NOT NULL").await,
        0
    );
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM etlkit.star_loads WHERE bulk_constraint IS NOT NULL").await,
        0
    );
    let again = StarJob::new(cfg).unwrap().run(&url).await.unwrap();
    assert_eq!(again.inserted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_is_an_error_naming_the_file_and_a_missing_optional_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_products(&dir.path().join("products.csv"));
    write_parquet(&dir.path().join("b.parquet"), 0..10);
    // `qty` renamed: no alias matches it.
    write_csv(&dir.path().join("a1.csv"), 10..20, &["qty"]);
    let url = fresh_url().await;
    let err = StarJob::new(retail_job(dir.path(), true)).unwrap().run(&url).await.unwrap_err();
    match &err {
        StarError::MissingColumn { file, column, .. } => {
            assert_eq!((file.file_name().unwrap(), column.as_str()), ("a1.csv".as_ref(), "qty"));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("a1.csv: no column for `qty`"), "{err}");
    // Nothing was loaded.
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'").await, 0);

    // The optional `coupon` missing from one file: loaded as NULL, and reported.
    std::fs::remove_file(dir.path().join("a1.csv")).unwrap();
    write_csv(&dir.path().join("a1.csv"), 10..20, &["coupon"]);
    let report = StarJob::new(retail_job(dir.path(), true)).unwrap().run(&url).await.unwrap();
    assert_eq!(report.inserted, 20);
    assert_eq!(report.missing_columns.len(), 1);
    assert_eq!(report.missing_columns[0].file.file_name().unwrap(), "a1.csv");
    assert_eq!(report.missing_columns[0].columns, ["coupon"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_rejected_with_their_line_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_products(&dir.path().join("products.csv"));
    write_parquet(&dir.path().join("b.parquet"), 0..10);
    let mut csv = String::new();
    write_csv(&dir.path().join("a.csv"), 10..14, &[]);
    csv.push_str(&std::fs::read_to_string(dir.path().join("a.csv")).unwrap());
    // Line 4: a quantity that does not fit Int32.
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    let mut fields: Vec<&str> = lines[3].split(',').collect();
    fields[9] = "3000000000"; // qty
    lines[3] = fields.join(",");
    std::fs::write(dir.path().join("a.csv"), lines.join("\n") + "\n").unwrap();
    let rejects = std::sync::Arc::new(etlkit_core::MemoryRejects::new());
    let url = fresh_url().await;
    let report =
        StarJob::new(retail_job(dir.path(), true)).unwrap().rejects(rejects.clone()).run(&url).await.unwrap();
    assert_eq!((report.rows_read, report.inserted, report.rejected), (14, 13, 1));
    let r = &rejects.rows()[0];
    assert_eq!((r.line, r.column.as_deref(), r.value.as_deref()), (Some(4), Some("qty"), Some("3000000000")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows_in_errors_or_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(dir.path());
    // Nothing listens on port 1: the run fails connecting, with the cause kept.
    let url = etlkit_star::DatabaseUrl::new("postgres://etl:s3cr3t-pw@127.0.0.1:1/shop");
    let job = StarJob::new(retail_job(dir.path(), true)).unwrap();
    let err = job.run(&url).await.unwrap_err();
    let core = etlkit_core::Error::from(
        StarJob::new(retail_job(dir.path(), true)).unwrap().run(&url).await.unwrap_err(),
    );
    for text in [
        err.to_string(),
        format!("{err:?}"),
        core.report().to_string(),
        format!("{core:?}"),
        format!("{job:?}"),
        format!("{url:?} {url}"),
    ] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
    assert!(core.report().to_string().to_lowercase().contains("refused"), "{}", core.report());
}

/// A small job over codes with leading zeros: a text target keeps every digit, from CSV as from
/// Parquet, in the facts, the dimension and its lookup (a NULL-keyed lookup row is skipped).
fn codes_job(dir: &std::path::Path, qty: DataType) -> StarJobConfig {
    StarJobConfig {
        inputs: InputsConfig {
            inputs: vec![
                Input::Glob(format!("{}/*.csv", dir.join("in").display())),
                Input::Glob(format!("{}/*.parquet", dir.join("in").display())),
            ],
            ..Default::default()
        },
        columns: vec![TargetColumn::new("code", DataType::Utf8), TargetColumn::new("qty", qty)],
        dimensions: vec![
            DimensionConfig::new("dim_code", vec![Field::new("code", DataType::Utf8, false)], "code_key")
                .attributes(vec![Field::new("name", DataType::Utf8, true)])
                .role(["code"], "code_key")
                .lookup(AttributeLookup {
                    input: dir.join("codes.csv").into(),
                    key_columns: vec!["code".into()],
                    attribute_columns: vec!["name".into()],
                }),
        ],
        fact: FactConfig {
            table: TableRef::new("fact_code"),
            measures: vec!["qty".into()],
            degenerate: Vec::new(),
            foreign_keys: true,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_text_keeps_its_digits_and_a_lookup_row_without_a_key_is_skipped() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    // The reader alone would guess these codes are integers: 007, 07 and 7 would be one code.
    std::fs::write(dir.path().join("in/a.csv"), "code,qty\n007,1\n7,2\n07,3\n007,1\n").unwrap();
    let batch = RecordBatch::try_from_iter([
        ("code", Arc::new(StringArray::from(vec!["007", "0007"])) as ArrayRef),
        ("qty", Arc::new(Int64Array::from(vec![1, 4])) as ArrayRef),
    ])
    .unwrap();
    etlkit_testkit::taxi::write_parquet(dir.path().join("in/b.parquet"), &[batch]).unwrap();
    std::fs::write(dir.path().join("codes.csv"), "code,name\n007,Bond\n7,Seven\n,Misc\n").unwrap();
    let url = fresh_url().await;
    let p = pool(&url).await;
    let job = StarJob::new(codes_job(dir.path(), DataType::Int64)).unwrap();
    let first = job.run(&url).await.unwrap();
    // (007, 1) twice in the CSV and once in the Parquet file: one row.
    assert_eq!((first.rows_read, first.inserted, first.duplicates), (6, 4, 2));
    assert_eq!((first.lookup_rows, first.lookup_rows_without_key), (3, 1));
    let codes: Vec<String> = etlkit_postgres::sqlx::query_scalar(
        "SELECT d.code || ':' || coalesce(d.name, '') || ':' || f.qty FROM fact_code f \
         JOIN dim_code d USING (code_key) ORDER BY 1",
    )
    .fetch_all(&p)
    .await
    .unwrap();
    assert_eq!(codes, ["0007::4", "007:Bond:1", "07::3", "7:Seven:2"]);
    // Again: nothing new, and the NULL-keyed lookup row has not become a member.
    let again = job.run(&url).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 6));
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_code").await, 5); // 4 codes + the unknown member
    // A column type that hashes as another kind would not find these rows again: refused. A
    // narrower integer hashes alike: accepted.
    let floats = StarJob::new(codes_job(dir.path(), DataType::Float64)).unwrap().run(&url).await.unwrap_err();
    assert!(
        matches!(&floats, StarError::HashMismatch { configured, .. } if configured.contains("qty float")),
        "{floats}"
    );
    let narrower = StarJob::new(codes_job(dir.path(), DataType::Int32)).unwrap().run(&url).await.unwrap();
    assert_eq!((narrower.inserted, narrower.duplicates), (0, 6));
}
