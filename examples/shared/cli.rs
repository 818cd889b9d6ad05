//! Command-line pieces shared by `examples/echo.rs` and `examples/http_demo.rs` (parsed with
//! `lexopt`). Include with `#[path = "shared/cli.rs"] mod cli;`.
#![allow(dead_code)] // each example uses a part

/// What `main` returns.
pub type MainResult = Result<(), Box<dyn std::error::Error>>;

/// The value of `--max-conn`: a connection limit in `1..=capacity`.
///
/// # Errors
/// A missing or unparsable value, or one outside `1..=capacity`.
pub fn max_conn(p: &mut lexopt::Parser, capacity: usize) -> Result<usize, lexopt::Error> {
    use lexopt::ValueExt;
    let n: usize = p.value()?.parse()?;
    if !(1..=capacity).contains(&n) {
        return Err(format!("--max-conn {n}: must be 1-{capacity}").into());
    }
    Ok(n)
}

/// `-h`/`--help`: print `usage` and exit with status 0.
pub fn help(usage: &str) -> ! {
    println!("{usage}");
    std::process::exit(0);
}

/// The parsed arguments, or (on an error) the error and `usage` on stderr, prefixed with
/// `name`, and exit status 2.
pub fn or_exit<A>(name: &str, usage: &str, parsed: Result<A, lexopt::Error>) -> A {
    parsed.unwrap_or_else(|e| {
        eprintln!("{name}: {e}\n{usage}");
        std::process::exit(2);
    })
}
