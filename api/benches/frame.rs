//! Packet encode and decode against a memcpy of the same bytes, the floor any codec pays.
//!
//! `cargo bench -p goim-api --bench frame`; the ratios go in docs/benchmarks.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goim_api::frame::{Batch, decode_message, decode_stream, split_packets};
use goim_api::{DEFAULT_MAX_BODY, Frame};

/// A typical push body: a small JSON message.
const BODY: &[u8] = br#"{"type":"chat","from":1001,"text":"hello, room","ts":1700000000123}"#;
/// Packets per stream in the decode benchmark.
const STREAM: usize = 1000;

fn encode(c: &mut Criterion) {
    let frame = Frame::push(1000, Bytes::from_static(BODY));
    let encoded = frame.to_bytes();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut dst = BytesMut::with_capacity(4096);
    g.bench_function("memcpy_baseline", |b| {
        b.iter(|| {
            dst.clear();
            dst.extend_from_slice(black_box(&encoded));
            black_box(dst.len())
        })
    });
    g.bench_function("frame_encode", |b| {
        b.iter(|| {
            dst.clear();
            black_box(&frame).encode(&mut dst);
            black_box(dst.len())
        })
    });
    g.finish();
    // A room batch of 20 packets (job's default `room.batch`), per packet.
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(20));
    g.bench_function("batch_of_20", |b| {
        let mut batch = Batch::new();
        b.iter(|| {
            for _ in 0..20 {
                batch.push(1000, black_box(BODY));
            }
            black_box(batch.take())
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let one = Frame::push(1000, Bytes::from_static(BODY)).to_bytes();
    let mut stream = BytesMut::new();
    for _ in 0..STREAM {
        stream.extend_from_slice(&one);
    }
    let stream = stream.freeze();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    let mut dst = BytesMut::with_capacity(stream.len());
    g.bench_function("memcpy_baseline_1000", |b| {
        b.iter(|| {
            dst.clear();
            dst.extend_from_slice(black_box(&stream));
            black_box(dst.len())
        })
    });
    // A TCP read buffer holding 1000 packets: the copy into the buffer is part of each
    // iteration (as a socket read is), so compare with the baseline above.
    g.bench_function("decode_stream_1000", |b| {
        b.iter(|| {
            dst.clear();
            dst.extend_from_slice(black_box(&stream));
            let mut n = 0;
            while let Some(f) = decode_stream(&mut dst, DEFAULT_MAX_BODY).expect("valid packets") {
                n += f.body.len();
            }
            black_box(n)
        })
    });
    g.bench_function("split_packets_1000", |b| {
        b.iter(|| {
            let n: usize =
                split_packets(black_box(stream.clone())).map(|f| f.expect("valid").body.len()).sum();
            black_box(n)
        })
    });
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("decode_message", |b| {
        b.iter(|| black_box(decode_message(black_box(one.clone()), DEFAULT_MAX_BODY).expect("valid")))
    });
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
