//! The fan-out of one room batch to 10,000 members: queueing one shared `Bytes` per member
//! (what `Comet::broadcast_room` does), and each member's writer draining and encoding it, against
//! a memcpy of the batch once per member (the copy into each socket's write buffer that any
//! server pays).
//!
//! `cargo bench -p goim-comet --bench fanout`; the ratios go in docs/benchmarks.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goim_api::Batch;
use goim_comet::bench::RoomFanout;

const MEMBERS: usize = 10_000;

/// A batch of `n` packets with a 64-byte body each.
fn batch(n: usize) -> bytes::Bytes {
    let mut b = Batch::new();
    for _ in 0..n {
        b.push(1000, &[b'x'; 64]);
    }
    b.take()
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_fanout_10k");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.sample_size(30);
    for packets in [1usize, 20] {
        let batch = batch(packets);
        let mut room = RoomFanout::new(MEMBERS);
        let mut out = BytesMut::with_capacity(64 * 1024);
        g.bench_function(format!("memcpy_baseline_{packets}_packets"), |b| {
            b.iter(|| {
                for _ in 0..MEMBERS {
                    out.clear();
                    out.extend_from_slice(black_box(&batch));
                }
                black_box(out.len())
            })
        });
        // Queueing only; the queues are emptied outside the timed part.
        g.bench_function(format!("enqueue_{packets}_packets"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    black_box(room.push(black_box(&batch)));
                    total += t.elapsed();
                    room.drain_encode(&mut out);
                }
                total
            })
        });
        g.bench_function(format!("enqueue_drain_encode_{packets}_packets"), |b| {
            b.iter(|| {
                let queued = room.push(black_box(&batch));
                black_box((queued, room.drain_encode(&mut out)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
