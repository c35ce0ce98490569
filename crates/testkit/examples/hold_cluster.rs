//! Starts a cluster (default: primary + 2 replicas), prints how to reach it,
//! and keeps it running until stdin is closed or a line is entered.
//!
//! ```text
//! cargo run -p meridian-testkit --example hold_cluster -- [replicas]
//! ```

use std::io::BufRead;
use std::time::Instant;

use meridian_testkit::{creds, Cluster};

fn main() -> Result<(), meridian_testkit::Error> {
    let replicas = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let t = Instant::now();
    let cluster = Cluster::builder().replicas(replicas).start()?;
    println!(
        "started primary + {replicas} replica(s) in {:?} in {}",
        t.elapsed(),
        cluster.dir().display()
    );
    for n in cluster.nodes() {
        println!(
            "{}: {}",
            n.name,
            n.url(creds::APP_USER, Some(creds::APP_PASSWORD), creds::APP_DB)
        );
    }
    println!("press Enter (or close stdin) to stop");
    let _ = std::io::stdin().lock().lines().next();
    Ok(())
}
