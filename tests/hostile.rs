//! Hostile input, end to end: requests an attacker would send to a public edge, a packager and
//! control, each with the answer it must get, against `estuary demo --keycards` (every role in
//! one process, the edge asking for keycards) and processes of their own where a case needs
//! one (control with three sites, a packager listening on its own).
//!
//! One demo serves every case, so this test has a harness of its own: it starts the demo, runs
//! the cases one by one, prints a line per case and the total as the standard harness does,
//! and stops every process it started, whatever the outcome.

mod support;

#[path = "hostile/control.rs"]
mod control;
#[path = "hostile/demo.rs"]
mod demo;
#[path = "hostile/edge.rs"]
mod edge;
#[path = "hostile/packager.rs"]
mod packager;

use std::time::Instant;

pub use demo::Demo;

/// The outcome of each case, as it runs.
#[derive(Default)]
pub struct Cases {
    filter: Option<String>,
    passed: usize,
    failed: Vec<(String, String)>,
}

impl Cases {
    /// Runs one case: `check` says what was wrong, if anything.
    pub fn case(&mut self, name: &str, check: impl FnOnce() -> Result<(), String>) {
        if self
            .filter
            .as_deref()
            .is_some_and(|filter| !name.contains(filter))
        {
            return;
        }
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or_else(|panic| {
                Err(panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".into()))
            });
        let took = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("test {name} ... ok ({took:.1} ms)");
            }
            Err(reason) => {
                println!("test {name} ... FAILED ({took:.1} ms)");
                self.failed.push((name.to_owned(), reason));
            }
        }
    }
}

fn main() {
    // `cargo test --test hostile -- NAME` runs the cases whose name holds NAME.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let mut cases = Cases {
        filter,
        ..Cases::default()
    };
    let started = Instant::now();
    {
        let demo = Demo::start();
        edge::run(&demo, &mut cases);
        packager::run(&demo, &mut cases);
        control::run(&demo, &mut cases);
    }
    println!();
    for (name, reason) in &cases.failed {
        println!("---- {name} ----\n{reason}\n");
    }
    let failed = cases.failed.len();
    println!(
        "test result: {}. {} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.passed,
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}
