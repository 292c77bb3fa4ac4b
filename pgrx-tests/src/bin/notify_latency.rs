//! Latency from COMMIT to receipt by a LISTEN client, for `make bench`.
//!
//! `notify_latency PORT DBNAME CHANNEL N INSERT [prepared]`: commits N times the single-row INSERT
//! (whose one parameter, `$1`, is an int4 from 0 to 999), each of which must cause a notification
//! on CHANNEL, one at a time, and prints the median and p99 time from sending COMMIT until the
//! listening connection has the notification. With `prepared`, each transaction is prepared
//! (`PREPARE TRANSACTION`) and the time runs from sending `COMMIT PREPARED`.

use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (port, db, channel, n, insert, prepared) = match args.as_slice() {
        [_, port, db, channel, n, insert] => (port, db, channel, n, insert, false),
        [_, port, db, channel, n, insert, mode] if mode == "prepared" => (port, db, channel, n, insert, true),
        _ => {
            eprintln!("usage: notify_latency PORT DBNAME CHANNEL N INSERT [prepared]");
            std::process::exit(2);
        }
    };
    let n: usize = n.parse().expect("N is a number");
    let conf = format!("host=127.0.0.1 port={port} user=postgres dbname={db}");
    let mut writer = Client::connect(&conf, NoTls).expect("connect writer");
    let mut listener = Client::connect(&conf, NoTls).expect("connect listener");
    listener.batch_execute(&format!("LISTEN \"{channel}\"")).unwrap();
    // Drain anything left from earlier runs.
    while let Ok(Some(_)) = listener.notifications().timeout_iter(Duration::from_millis(200)).next() {}
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = if prepared {
            writer.batch_execute("BEGIN").unwrap();
            writer.execute(insert.as_str(), &[&(i as i32 % 1000)]).unwrap();
            writer.batch_execute("PREPARE TRANSACTION 'notify_latency'").unwrap();
            let start = Instant::now();
            writer.batch_execute("COMMIT PREPARED 'notify_latency'").unwrap();
            start
        } else {
            let mut tx = writer.transaction().unwrap();
            tx.execute(insert.as_str(), &[&(i as i32 % 1000)]).unwrap();
            let start = Instant::now();
            tx.commit().unwrap();
            start
        };
        let got = listener.notifications().timeout_iter(Duration::from_secs(5)).next();
        match got {
            Ok(Some(_)) => samples.push(start.elapsed()),
            _ => panic!("no notification within 5 s"),
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!("median {:.3} ms, p99 {:.3} ms over {n} commits", at(0.5).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3);
}
