//! The README's retail star job (README.md, "A star-schema job"), declared the same way, run against
//! a real PostgreSQL: two CSV exports in two namings, a product lookup, one optional column missing
//! from the older export; a second run inserts nothing.

mod common;

use common::{fresh_url, pool, scalar};
use etlkit_star::arrow_schema::{DataType, Field, TimeUnit};
use etlkit_star::{
    AttributeLookup, DimensionConfig, FactConfig, Input, InputsConfig, OnError, StarJob, StarJobConfig,
    TableRef, TargetColumn,
};

/// The README's declaration, with the files in `dir`.
fn readme_job(dir: &std::path::Path) -> StarJobConfig {
    let key = |name: &str| vec![Field::new(name, DataType::Utf8, false)];
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    StarJobConfig {
        inputs: InputsConfig {
            inputs: vec![Input::Glob(format!("{}/orders/*.csv", dir.display()))],
            on_error: OnError::Reject,
            ..Default::default()
        },
        columns: vec![
            TargetColumn::new("order_id", DataType::Int64),
            TargetColumn::new("ordered_at", DataType::Timestamp(TimeUnit::Microsecond, None)),
            TargetColumn::new("customer", DataType::Utf8).aliases(["client"]),
            TargetColumn::new("customer_city", DataType::Utf8),
            TargetColumn::new("ship_city", DataType::Utf8).optional(),
            TargetColumn::new("sku", DataType::Utf8).aliases(["product_code"]),
            TargetColumn::new("qty", DataType::Int32),
            TargetColumn::new("unit_price", DataType::Float64),
        ],
        dimensions: vec![
            DimensionConfig::new("dim_customer", key("customer"), "customer_key")
                .role(["customer"], "customer_key"),
            DimensionConfig::new("dim_city", key("city"), "city_key")
                .role(["customer_city"], "customer_city_key")
                .role(["ship_city"], "ship_city_key"),
            DimensionConfig::new("dim_product", key("sku"), "product_key")
                .attributes(vec![text("name"), text("category")])
                .role(["sku"], "product_key")
                .lookup(AttributeLookup {
                    input: Input::File(dir.join("products.csv")),
                    key_columns: vec!["sku".into()],
                    attribute_columns: vec!["name".into(), "category".into()],
                }),
            DimensionConfig::date("dim_date").role(["ordered_at"], "order_date_key"),
        ],
        fact: FactConfig {
            table: TableRef::new("fact_order"),
            measures: vec!["qty".into(), "unit_price".into()],
            degenerate: vec!["order_id".into()],
            foreign_keys: true,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_retail_job_loads_and_a_second_run_inserts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("orders")).unwrap();
    std::fs::write(
        dir.path().join("products.csv"),
        "sku,name,category\nA1,Apple,food\nB2,Broom,home\nC3,Chair,home\n",
    )
    .unwrap();
    // The older export: `client`, `product_code`, no ship_city; one row repeated.
    std::fs::write(
        dir.path().join("orders/2023.csv"),
        "order_id,ordered_at,client,customer_city,product_code,qty,unit_price\n\
         1,2023-12-30 10:00:00,ann,Leeds,A1,2,0.5\n\
         2,2023-12-31 11:00:00,bob,York,B2,1,12.0\n\
         2,2023-12-31 11:00:00,bob,York,B2,1,12.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("orders/2024.csv"),
        "order_id,ordered_at,customer,customer_city,ship_city,sku,qty,unit_price\n\
         3,2024-01-02 09:30:00,ann,Leeds,York,C3,4,45.0\n\
         4,2024-01-02 17:00:00,cy,Bath,,A1,not-a-number,0.5\n\
         5,2024-01-03 08:00:00,cy,Bath,Bath,D4,1,3.0\n",
    )
    .unwrap();
    let url = fresh_url().await;
    let job = StarJob::new(readme_job(dir.path())).unwrap();
    let first = job.run(&url).await.unwrap();
    assert_eq!((first.rows_read, first.inserted, first.duplicates, first.rejected), (6, 4, 1, 1));
    assert_eq!(first.missing_columns.len(), 1);
    assert_eq!(first.missing_columns[0].columns, ["ship_city"]);
    assert_eq!(first.members_created["dim_city"], 3);
    assert_eq!(first.members_created["dim_product"], 1); // D4 is not in the lookup
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order").await, 4);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_order WHERE ship_city_key = -1").await, 2);
    assert_eq!(
        scalar(
            &p,
            "SELECT count(*) FROM fact_order f JOIN dim_product USING (product_key) WHERE category = 'home'"
        )
        .await,
        2
    );
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_date WHERE year = 2023 AND quarter = 4").await, 2);
    let again = job.run(&url).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 5));
}
