//! Input listing: directories and globs read every file once (symlinks included), and a glob leaves
//! hidden files out as a directory does.

use std::path::Path;

use etlkit_core::{Context, Source};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, list_inputs};
use futures::StreamExt;

fn rows(input: Input) -> usize {
    let source = CsvSource::open(CsvSourceConfig { input, ..Default::default() }).unwrap();
    let batches: Vec<_> =
        futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
    batches.into_iter().map(|b| b.unwrap().num_rows()).sum()
}

fn glob(dir: &Path, pattern: &str) -> Input {
    Input::Glob(format!("{}/{pattern}", dir.display()))
}

#[cfg(unix)]
#[test]
fn a_symlink_next_to_its_target_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("2024-05.csv"), "id\n1\n2\n").unwrap();
    std::os::unix::fs::symlink(d.join("2024-05.csv"), d.join("latest.csv")).unwrap();

    let target = vec![d.join("2024-05.csv")];
    assert_eq!(list_inputs(&[Input::Dir(d.to_owned())]).unwrap(), target);
    assert_eq!(list_inputs(&[glob(d, "*.csv")]).unwrap(), target);
    // Across inputs too; the first path listed is kept.
    let both = [Input::File(d.join("latest.csv")), Input::Dir(d.to_owned())];
    assert_eq!(list_inputs(&both).unwrap(), [d.join("latest.csv")]);
    // The readers read it once.
    assert_eq!(rows(Input::Dir(d.to_owned())), 2);
    assert_eq!(rows(glob(d, "*.csv")), 2);
}

#[test]
fn a_glob_leaves_hidden_files_out_unless_the_pattern_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.csv"), "id\n1\n").unwrap();
    std::fs::write(d.join(".x.csv"), "id\n2\n3\n").unwrap();
    assert_eq!(list_inputs(&[glob(d, "*.csv")]).unwrap(), [d.join("a.csv")]);
    assert_eq!(list_inputs(&[Input::Dir(d.to_owned())]).unwrap(), [d.join("a.csv")]);
    assert_eq!(rows(glob(d, "*.csv")), 1);
    // A wildcard never matches the leading dot; naming the file does.
    assert!(list_inputs(&[glob(d, "?x.csv")]).is_err());
    assert_eq!(list_inputs(&[glob(d, ".x.csv")]).unwrap(), [d.join(".x.csv")]);
}
