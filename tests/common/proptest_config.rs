//! The proptest configuration of the model tests. Include with
//! `#[path = "common/proptest_config.rs"] mod proptest_config;`.

use proptest::test_runner::Config;

/// 512 cases, or `PROPTEST_CASES` for longer runs; no failure-persistence files.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
