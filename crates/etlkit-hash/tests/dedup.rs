//! Dedup: within and across batches, concurrent callers, precomputed hash columns, seeding, and the
//! count reaching LoadStats through a real pipeline run.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::*;
use etlkit_core::{Context, MemorySink, MemorySource, Pipeline, PipelineConfig, Transform};
use etlkit_hash::{Algorithm, Dedup, DedupConfig, HashFormat, RowHashConfig, RowHashTransform, RowHasher};

/// Rows `keys` as (k, name) with name derived from k, so equal keys are equal rows.
fn batch(keys: impl IntoIterator<Item = i64>) -> RecordBatch {
    let keys: Vec<i64> = keys.into_iter().collect();
    RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(keys.clone())) as ArrayRef),
        ("name", Arc::new(StringArray::from_iter_values(keys.iter().map(|k| format!("n{}", k % 1000))))),
    ])
    .unwrap()
}

fn keys(b: &RecordBatch) -> Vec<i64> {
    b.column(0).as_primitive::<arrow_array::types::Int64Type>().values().to_vec()
}

#[test]
fn drops_repeats_within_and_across_batches_keeping_first_occurrence() {
    let d = Dedup::new(DedupConfig::default()).unwrap();
    let ctx = Context::default();
    let out = d.apply(batch([5, 1, 5, 2, 1, 5]), &ctx).unwrap();
    assert_eq!(keys(&out[0]), [5, 1, 2]);
    let out = d.apply(batch([2, 3, 5, 3]), &ctx).unwrap();
    assert_eq!(keys(&out[0]), [3]);
    assert!(d.apply(batch([1, 2, 3]), &ctx).unwrap().is_empty()); // all seen: no batch
    assert_eq!(ctx.deduplicated(), 3 + 3 + 3);
    assert_eq!(d.distinct(), 4);
    // only the configured columns define a duplicate
    let by_name = Dedup::new(DedupConfig { columns: vec!["name".into()], ..Default::default() }).unwrap();
    let out = by_name.apply(batch([1, 1001, 2]), &ctx).unwrap(); // n1, n1, n2
    assert_eq!(keys(&out[0]), [1, 2]);
}

#[test]
fn concurrent_callers_keep_each_distinct_row_exactly_once() {
    for shards in [1, 64] {
        let d =
            Dedup::new(DedupConfig { shards, algorithm: Algorithm::Blake3, ..Default::default() }).unwrap();
        let ctx = Context::default();
        // 4 threads × 20 batches of 500 rows drawn from 3000 distinct keys, heavily overlapping.
        let kept: Vec<Vec<i64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (d, ctx) = (&d, &ctx);
                    s.spawn(move || {
                        let mut kept = Vec::new();
                        for b in 0..20 {
                            let ks = (0..500).map(|i| ((t * 7919 + b * 104_729 + i * 31) % 3000) as i64);
                            for out in d.apply(batch(ks), ctx).unwrap() {
                                kept.extend(keys(&out));
                            }
                        }
                        kept
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<i64> = kept.into_iter().flatten().collect();
        let total_kept = all.len() as u64;
        all.sort();
        all.dedup();
        assert_eq!(all.len() as u64, total_kept, "a row was kept twice (shards = {shards})");
        assert_eq!(total_kept + ctx.deduplicated(), 4 * 20 * 500);
        assert_eq!(d.distinct() as u64, total_kept);
    }
}

#[test]
fn uses_precomputed_hash_column_and_seeded_digests() {
    let ctx = Context::default();
    let first = batch([1, 2, 3]);
    for format in [HashFormat::Binary, HashFormat::Hex] {
        let add = RowHashTransform::new(RowHashConfig { format, ..Default::default() }).unwrap();
        let d =
            Dedup::new(DedupConfig { hash_column: Some("row_hash".into()), ..Default::default() }).unwrap();
        // Seed with the digests of rows loaded by an "earlier run".
        let earlier = RowHasher::all_columns(Algorithm::Sha256).hash_batch(&first).unwrap();
        assert_eq!(d.seed((0..3).map(|i| earlier.value(i).try_into().unwrap())), 3);
        let hashed = add.apply(batch([3, 4, 1, 4]), &ctx).unwrap().remove(0);
        let out = d.apply(hashed, &ctx).unwrap();
        assert_eq!(keys(&out[0]), [4]);
        // seeding from a column of a batch (as read back from a table) works the same way
        let d2 = Dedup::new(DedupConfig::default()).unwrap();
        let table = add.apply(first.clone(), &ctx).unwrap().remove(0);
        assert_eq!(d2.seed_from_column(&table, "row_hash").unwrap(), 3);
        assert_eq!(keys(&d2.apply(batch([2, 5]), &ctx).unwrap()[0]), [5]);
        assert!(d2.seed_from_column(&table, "k").is_err());
    }
    assert_eq!(ctx.deduplicated(), 2 * (3 + 1));
    // a hash column of the wrong type is refused up front
    let d = Dedup::new(DedupConfig { hash_column: Some("k".into()), ..Default::default() }).unwrap();
    assert!(d.output_schema(&first.schema()).is_err());
    assert!(d.apply(first, &ctx).is_err());
    assert!(Dedup::new(DedupConfig { shards: 3, ..Default::default() }).is_err());
}

#[test]
fn pipeline_counts_duplicates_in_load_stats() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = vec![batch(0..1000), batch((500..1500).chain(0..10))];
    let source = MemorySource::new(batches[0].schema(), batches).unwrap();
    let sink = Arc::new(MemorySink::new());
    let config = PipelineConfig { batch_size: 256, transform_concurrency: 2, ..Default::default() };
    let stats = rt
        .block_on(
            Pipeline::new(source, sink.clone())
                .transform(RowHashTransform::new(RowHashConfig::default()).unwrap())
                .transform(
                    Dedup::new(DedupConfig { hash_column: Some("row_hash".into()), ..Default::default() })
                        .unwrap(),
                )
                .config(config)
                .run(),
        )
        .unwrap();
    assert_eq!(stats.rows_read, 2010);
    assert_eq!(stats.rows_deduplicated, 510);
    assert_eq!(stats.rows_written, 1500);
    assert_eq!(sink.committed_rows(), 1500);
}

/// A batch of one `FixedSizeBinary(32)` column `h` holding the given digests.
fn digests(ds: &[[u8; 32]]) -> RecordBatch {
    let a = FixedSizeBinaryArray::try_from_iter(ds.iter()).unwrap();
    RecordBatch::try_from_iter([("h", Arc::new(a) as ArrayRef)]).unwrap()
}

#[test]
fn key_bytes_decides_how_much_of_the_digest_identifies_a_row() {
    let ctx = Context::default();
    let mut a = [7u8; 32];
    a[0] = 1;
    let mut b = a;
    b[31] = 99; // same first 128 bits, different digest
    let mut c = a;
    c[15] = 99; // differs inside the first 128 bits
    let cfg = |key_bytes| DedupConfig { hash_column: Some("h".into()), key_bytes, ..Default::default() };
    let full = Dedup::new(cfg(32)).unwrap();
    assert_eq!(full.first_seen(&digests(&[a, b, c, a])).unwrap(), [true, true, true, false]);
    let short = Dedup::new(cfg(16)).unwrap();
    assert_eq!(short.first_seen(&digests(&[a, b, c, a])).unwrap(), [true, false, true, false]);
    assert!(Dedup::new(cfg(8)).is_err());
    // On real row hashes both widths agree (and the default is 16).
    assert_eq!(DedupConfig::default().key_bytes, 16);
    let rows = batch((0..5000).chain(100..300).chain(4990..5010));
    let hashed =
        RowHashTransform::new(RowHashConfig::default()).unwrap().apply(rows, &ctx).unwrap().remove(0);
    let keep = |key_bytes| {
        Dedup::new(DedupConfig { hash_column: Some("row_hash".into()), key_bytes, ..Default::default() })
            .unwrap()
            .first_seen(&hashed)
            .unwrap()
    };
    let k16 = keep(16);
    assert_eq!(k16, keep(32));
    assert_eq!(k16.iter().filter(|k| **k).count(), 5010);
}

#[test]
fn expected_rows_allocates_up_front_and_the_set_does_not_grow_within_it() {
    let cfg = |expected_rows| DedupConfig { expected_rows, ..Default::default() };
    assert_eq!(Dedup::new(cfg(0)).unwrap().allocated_bytes(), 0);
    let d = Dedup::new(cfg(100_000)).unwrap();
    let before = d.allocated_bytes();
    // 100 000 keys of 17 bytes (16 + control) at most 7/8 full: at least ~1.9 MB.
    assert!(before >= 100_000 * 17, "{before}");
    let ctx = Context::default();
    for part in 0..10 {
        d.apply(batch(part * 9_000..(part + 1) * 9_000), &ctx).unwrap();
    }
    assert_eq!(d.distinct(), 90_000);
    assert_eq!(d.allocated_bytes(), before);
    assert_eq!(cfg(100_000).seen_set_bytes(100_000), before);
    // Without the hint, the same rows make the tables grow from nothing.
    let grown = Dedup::new(cfg(0)).unwrap();
    grown.apply(batch(0..90_000), &ctx).unwrap();
    assert!(grown.allocated_bytes() > 0);
}

#[test]
fn partitioned_runs_together_keep_exactly_what_one_run_keeps() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // 3020 rows, 1910 distinct, repeats within and across batches; 0..100 "already loaded" (seeded).
    let batches =
        vec![batch(0..1000), batch((500..1500).chain(0..10)), batch((900..1900).rev().chain(1990..2000))];
    let seeded: Vec<[u8; 32]> = {
        let hasher = RowHasher::new(Algorithm::Sha256, Vec::<String>::new());
        let h = hasher.hash_batch(&batch(0..100)).unwrap();
        h.value_data().chunks_exact(32).map(|d| d.try_into().unwrap()).collect()
    };
    let run = |partition| {
        let dedup = Arc::new(
            Dedup::new(DedupConfig { hash_column: Some("row_hash".into()), partition, ..Default::default() })
                .unwrap(),
        );
        let newly_seeded = dedup.seed(seeded.iter().copied());
        let source = MemorySource::new(batches[0].schema(), batches.clone()).unwrap();
        let sink = Arc::new(MemorySink::new());
        let stats = rt
            .block_on(
                Pipeline::new(source, sink.clone())
                    .transform(RowHashTransform::new(RowHashConfig::default()).unwrap())
                    .transform_arc(dedup.clone())
                    .config(PipelineConfig {
                        batch_size: 256,
                        transform_concurrency: 2,
                        ..Default::default()
                    })
                    .run(),
            )
            .unwrap();
        let mut kept: Vec<i64> = sink.committed().iter().flat_map(keys).collect();
        kept.sort_unstable();
        assert_eq!(stats.rows_read, 3020);
        assert_eq!(
            stats.rows_filtered,
            dedup.outside_partition(),
            "outside rows are filtered, not duplicates"
        );
        (kept, stats.rows_deduplicated, dedup.outside_partition(), newly_seeded)
    };
    let (all, all_dups, all_outside, all_seeded) = run(None);
    assert!(all == (100..1900).chain(1990..2000).collect::<Vec<_>>(), "{} rows kept", all.len());
    assert_eq!((all_dups, all_outside, all_seeded), (3020 - 1810, 0, 100));
    let count = 3;
    let parts: Vec<_> =
        (0..count).map(|index| run(Some(etlkit_hash::DigestPartition { index, count }))).collect();
    let mut union: Vec<i64> = parts.iter().flat_map(|p| p.0.clone()).collect();
    union.sort_unstable();
    assert!(
        union == all,
        "each distinct row is kept by exactly one partition: {} vs {}",
        union.len(),
        all.len()
    );
    assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), all_dups);
    assert_eq!(parts.iter().map(|p| p.2).sum::<u64>(), 2 * 3020, "every row is outside two of three");
    assert_eq!(parts.iter().map(|p| p.3).sum::<usize>(), 100, "each seeded digest lands in one partition");
    assert!(parts.iter().all(|p| !p.0.is_empty() && p.0.len() < all.len()));
    assert!(
        Dedup::new(DedupConfig {
            partition: Some(etlkit_hash::DigestPartition { index: 3, count: 3 }),
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn partition_prefix_ranges_tile_the_digest_space() {
    use etlkit_hash::DigestPartition;
    for count in [1u32, 2, 3, 7, 16, 255] {
        let parts: Vec<_> = (0..count).map(|index| DigestPartition { index, count }).collect();
        assert_eq!(parts[0].prefix_range().0, [0; 4]);
        assert_eq!(parts[count as usize - 1].prefix_range().1, None);
        for w in parts.windows(2) {
            assert_eq!(w[0].prefix_range().1, Some(w[1].prefix_range().0), "contiguous, {count} partitions");
        }
        // Digests on and around every boundary agree with `contains`.
        for p in &parts {
            let (lo, hi) = p.prefix_range();
            let lo_n = u32::from_be_bytes(lo);
            for prefix in [lo_n.saturating_sub(1), lo_n, lo_n.saturating_add(1)] {
                let mut d = [0xa5u8; 32];
                d[..4].copy_from_slice(&prefix.to_be_bytes());
                let in_range = d[..] >= lo[..] && hi.is_none_or(|h| d[..] < h[..]);
                assert_eq!(
                    p.contains(&d),
                    in_range,
                    "{count} partitions, index {}, prefix {prefix:#x}",
                    p.index
                );
            }
        }
    }
}
