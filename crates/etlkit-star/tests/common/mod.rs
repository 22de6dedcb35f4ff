//! A synthetic retail-orders star schema for the job tests: orders in a CSV file (other namings) and
//! a Parquet file, overlapping and with duplicates; customers, role-playing cities and dates, a
//! product lookup file, and a store dimension with a composite key whose parts contain `|`.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, TimeUnit};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use etlkit_postgres::{DatabaseUrl, TableRef, connect};
use etlkit_star::{
    AttributeLookup, DimensionConfig, FactConfig, Input, InputsConfig, OnError, StarJobConfig, TargetColumn,
};
use etlkit_testkit::PgServer;

pub async fn fresh_url() -> DatabaseUrl {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    DatabaseUrl::new(url)
}

pub async fn pool(url: &DatabaseUrl) -> PgPool {
    connect(url, 3, "etlkit-star-test").await.unwrap()
}

pub async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap()
}

const CITIES: [&str; 6] = ["Leeds", "York", "Bath", "Ely", "Wells", "Truro"];
const STORES: [(&str, &str); 3] = [("A|B", "C"), ("A", "B|C"), ("Main", "UK")];
/// 2024-01-01T00:00:00 in microseconds.
const JAN_1: i64 = 1_704_067_200_000_000;
const DAY: i64 = 86_400_000_000;

pub struct Order {
    pub id: i64,
    pub ordered_at: i64,
    pub shipped_at: Option<i64>,
    pub customer: String,
    pub customer_city: &'static str,
    pub ship_city: Option<&'static str>,
    pub product: String,
    pub store: (&'static str, &'static str),
    pub qty: i64,
    pub price: f64,
    pub coupon: Option<&'static str>,
}

pub fn order(i: i64) -> Order {
    let ordered_at = JAN_1 + (i % 40) * DAY + i * 60_000_000;
    Order {
        id: i,
        ordered_at,
        shipped_at: (i % 7 != 0).then_some(ordered_at + 2 * DAY),
        customer: format!("cust{}", i % 23),
        customer_city: CITIES[(i % 23 % 5) as usize],
        ship_city: (i % 11 != 0).then_some(CITIES[((i + 1) % 6) as usize]),
        product: format!("P{}", i % 9),
        store: STORES[(i % 3) as usize],
        qty: i % 4 + 1,
        price: (i % 17) as f64 + 0.5,
        coupon: (i % 5 == 0).then_some("SPRING"),
    }
}

fn ts(us: i64) -> String {
    // Days and time of day after 2024-01-01 (all test dates are in January–February 2024).
    let (days, rest) = ((us - JAN_1) / DAY, (us - JAN_1) % DAY / 1_000_000);
    let (month, day) = if days < 31 { (1, days + 1) } else { (2, days - 30) };
    format!("2024-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

/// Orders as CSV in another naming (`OrderID`, `client`, `OrderedAt`, `product`, ...), optional
/// columns included unless `without` names them.
pub fn write_csv(path: &Path, ids: impl Iterator<Item = i64>, without: &[&str]) {
    let cols = [
        "OrderID",
        "OrderedAt",
        "shipped_at",
        "client",
        "customer_city",
        "ship_city",
        "product",
        "store_name",
        "store_country",
        "qty",
        "price",
        "coupon",
    ];
    let keep: Vec<usize> = (0..cols.len()).filter(|i| !without.contains(&cols[*i])).collect();
    let mut out = keep.iter().map(|i| cols[*i]).collect::<Vec<_>>().join(",");
    out.push('\n');
    for i in ids {
        let o = order(i);
        let values = [
            o.id.to_string(),
            ts(o.ordered_at),
            o.shipped_at.map(ts).unwrap_or_default(),
            o.customer,
            o.customer_city.into(),
            o.ship_city.unwrap_or_default().into(),
            o.product,
            o.store.0.into(),
            o.store.1.into(),
            o.qty.to_string(),
            o.price.to_string(),
            o.coupon.unwrap_or_default().into(),
        ];
        out.push_str(&keep.iter().map(|i| values[*i].as_str()).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Orders as Parquet in the target naming.
pub fn write_parquet(path: &Path, ids: impl Iterator<Item = i64>) {
    let orders: Vec<Order> = ids.map(order).collect();
    let text = |f: &dyn Fn(&Order) -> Option<String>| {
        Arc::new(StringArray::from_iter(orders.iter().map(f))) as ArrayRef
    };
    let batch = RecordBatch::try_from_iter([
        ("order_id", Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.id))) as ArrayRef),
        (
            "ordered_at",
            Arc::new(TimestampMicrosecondArray::from_iter_values(orders.iter().map(|o| o.ordered_at))) as _,
        ),
        (
            "shipped_at",
            Arc::new(TimestampMicrosecondArray::from_iter(orders.iter().map(|o| o.shipped_at))) as _,
        ),
        ("customer", text(&|o| Some(o.customer.clone()))),
        ("customer_city", text(&|o| Some(o.customer_city.into()))),
        ("ship_city", text(&|o| o.ship_city.map(Into::into))),
        ("product_code", text(&|o| Some(o.product.clone()))),
        ("store_name", text(&|o| Some(o.store.0.into()))),
        ("store_country", text(&|o| Some(o.store.1.into()))),
        ("qty", Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.qty))) as _),
        ("price", Arc::new(Float64Array::from_iter_values(orders.iter().map(|o| o.price))) as _),
        ("coupon", text(&|o| o.coupon.map(Into::into))),
    ])
    .unwrap();
    etlkit_testkit::taxi::write_parquet(path, &[batch]).unwrap();
}

/// The product lookup: P0..P9 with names and categories.
pub fn write_products(path: &Path) {
    let mut out = String::from("code,name,category\n");
    for p in 0..10 {
        out.push_str(&format!("P{p},Product {p},{}\n", if p % 2 == 0 { "food" } else { "garden" }));
    }
    std::fs::write(path, out).unwrap();
}

/// The standard data set in `dir`: `a.csv` (orders 0..400 plus orders 0..20 again) and
/// `b.parquet` (orders 300..600): 600 distinct orders in 720 rows. Plus `products.csv`.
pub fn write_orders(dir: &Path) {
    write_csv(&dir.join("a.csv"), (0..400).chain(0..20), &[]);
    write_parquet(&dir.join("b.parquet"), 300..600);
    write_products(&dir.join("products.csv"));
}

pub fn columns() -> Vec<TargetColumn> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    vec![
        TargetColumn::new("order_id", DataType::Int64),
        TargetColumn::new("ordered_at", ts.clone()),
        TargetColumn::new("shipped_at", ts),
        TargetColumn::new("customer", DataType::Utf8).aliases(["client"]),
        TargetColumn::new("customer_city", DataType::Utf8),
        TargetColumn::new("ship_city", DataType::Utf8),
        TargetColumn::new("product_code", DataType::Utf8).aliases(["product"]),
        TargetColumn::new("store_name", DataType::Utf8),
        TargetColumn::new("store_country", DataType::Utf8),
        TargetColumn::new("qty", DataType::Int32),
        TargetColumn::new("price", DataType::Float64),
        TargetColumn::new("coupon", DataType::Utf8).optional(),
    ]
}

/// The retail job over `dir`'s `*.csv` orders and `*.parquet` files (a rows table `orders` when
/// `rows_table`).
pub fn retail_job(dir: &Path, rows_table: bool) -> StarJobConfig {
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    StarJobConfig {
        inputs: InputsConfig {
            inputs: vec![
                Input::Glob(format!("{}/a*.csv", dir.display())),
                Input::Glob(format!("{}/*.parquet", dir.display())),
            ],
            on_error: OnError::Reject,
            ..Default::default()
        },
        columns: columns(),
        dimensions: vec![
            DimensionConfig::new("dim_customer", vec![text("customer")], "customer_key")
                .attributes(vec![Field::new("city", DataType::Utf8, true)])
                .role_with_attributes(["customer"], ["customer_city"], "customer_key"),
            // Role-playing: the customer's city and the shipping city.
            DimensionConfig::new("dim_city", vec![text("city")], "city_key")
                .role(["customer_city"], "customer_city_key")
                .role(["ship_city"], "ship_city_key"),
            DimensionConfig::new("dim_product", vec![text("code")], "product_key")
                .attributes(vec![
                    Field::new("name", DataType::Utf8, true),
                    Field::new("category", DataType::Utf8, true),
                ])
                .role(["product_code"], "product_key")
                .lookup(AttributeLookup {
                    input: dir.join("products.csv").into(),
                    key_columns: vec!["code".into()],
                    attribute_columns: vec!["name".into(), "category".into()],
                }),
            DimensionConfig::new("dim_store", vec![text("name"), text("country")], "store_key")
                .role(["store_name", "store_country"], "store_key"),
            DimensionConfig::date("dim_date")
                .role(["ordered_at"], "order_date_key")
                .role(["shipped_at"], "ship_date_key"),
        ],
        fact: FactConfig {
            table: TableRef::new("fact_order"),
            measures: vec!["qty".into(), "price".into()],
            degenerate: vec!["order_id".into()],
            foreign_keys: true,
        },
        rows_table: rows_table.then(|| TableRef::new("orders")),
        batch_size: 64,
        workers: 2,
        ..Default::default()
    }
}

/// The retail job with the rows as a view `orders` over `fact_order` (the fact table keeps the
/// columns no one-column key gives back as degenerate attributes, and the row hash is UNIQUE there).
pub fn retail_view_job(dir: &Path) -> StarJobConfig {
    let mut cfg = retail_job(dir, false);
    cfg.fact.degenerate = ["order_id", "ordered_at", "shipped_at", "store_name", "store_country", "coupon"]
        .map(String::from)
        .to_vec();
    cfg.rows_view = Some(TableRef::new("orders"));
    cfg
}
