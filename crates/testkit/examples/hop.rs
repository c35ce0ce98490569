//! The floor of one proxy hop: a plain TCP relay on a single-threaded tokio runtime that copies
//! bytes both ways and understands nothing. `make bench` runs it as its `relay` target, so that
//! each report shows what any userspace proxy in the path costs on that machine before it does
//! any work of its own.
//!
//! `cargo run --release -p meridian-testkit --example hop -- <listen addr> <upstream addr>`

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hop <listen addr> <upstream addr>");
        std::process::exit(2);
    };
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{s}: {e}")))
    };
    let (listen, upstream) = (parse(&listen)?, parse(&upstream)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                if client.set_nodelay(true).is_err() || server.set_nodelay(true).is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}
