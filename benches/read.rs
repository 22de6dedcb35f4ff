//! Criterion bench for the etlkit-source readers (filled in with issue 3).
use criterion::{Criterion, criterion_group, criterion_main};

fn read(_c: &mut Criterion) {}

criterion_group!(benches, read);
criterion_main!(benches);
