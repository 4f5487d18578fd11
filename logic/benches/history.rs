//! The cost of positions (`docs/recovery.md`) on logic's room push: `Logic::push_room` with
//! positions off (goim's push, the baseline), with the memory history (embedded), and with the
//! Redis history (distributed; needs `GOIM_TEST_REDIS_URL`, from `scripts/services.sh env`);
//! then the memory one history costs per room, printed: in this process for the memory history,
//! and as Redis's `used_memory` for the Redis one.
//!
//! `cargo bench -p goim-logic --bench history`; the ratios go in docs/benchmarks.md.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use goim_logic::config::AuthMode;
use goim_logic::history::{History, HistoryConfig, MemoryHistory};
use goim_logic::{Config, Logic, MemoryStore, queue};

/// A 100-byte chat message.
const BODY: &[u8; 100] = &[b'x'; 100];

fn logic(rt: &tokio::runtime::Runtime, history: Option<Arc<dyn History>>) -> Arc<Logic> {
    let mut config = Config::default();
    config.auth.mode = AuthMode::Json;
    config.history.enabled = history.is_some();
    let (queue, mut rx) = queue::Memory::channel(4096, Duration::from_secs(1));
    // job's place: takes every push at once.
    rt.spawn(async move { while rx.recv().await.is_some() {} });
    let logic = Logic::new(config, Arc::new(MemoryStore::default()), Arc::new(queue)).expect("json mode");
    Arc::new(match history {
        Some(h) => logic.with_history(h),
        None => logic,
    })
}

fn push_room(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut arms: Vec<(&str, Arc<Logic>)> = vec![
        ("positions_off", logic(&rt, None)),
        ("memory_history", logic(&rt, Some(Arc::new(MemoryHistory::new(&HistoryConfig::default()))))),
    ];
    if let Ok(url) = std::env::var("GOIM_TEST_REDIS_URL") {
        let redis = goim_logic::store::RedisConfig { url, ..Default::default() };
        let store = rt.block_on(goim_logic::RedisStore::connect(&redis)).expect("redis");
        let history = goim_logic::RedisHistory::new(Arc::new(store), &HistoryConfig::default());
        arms.push(("redis_history", logic(&rt, Some(Arc::new(history)))));
    } else {
        eprintln!("GOIM_TEST_REDIS_URL is not set: no redis_history arm");
    }
    let mut group = c.benchmark_group("push_room");
    for (name, logic) in &arms {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                logic.push_room(1000, "live", "bench", Bytes::from_static(BODY)).await.unwrap();
            })
        });
    }
    group.finish();
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn memory_per_room(_: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rooms = 10_000;
    let config = HistoryConfig { max_streams: rooms * 2, ..HistoryConfig::default() };
    let history = MemoryHistory::new(&config);
    let before = rss();
    rt.block_on(async {
        for r in 0..rooms {
            let stream = format!("room:live://{r}");
            for _ in 0..config.size {
                // An owned body, as a push's is (a static one would not be counted).
                history.append(&stream, 1000, &Bytes::copy_from_slice(BODY)).await.unwrap();
            }
        }
    });
    let per_room = rss().saturating_sub(before) / rooms;
    eprintln!(
        "history memory: {per_room} bytes per room with {} pushes of {} bytes kept ({} per push, body included)",
        config.size,
        BODY.len(),
        per_room / config.size
    );
    std::hint::black_box(history.entry_count());
    if let Ok(url) = std::env::var("GOIM_TEST_REDIS_URL") {
        rt.block_on(redis_memory_per_room(&url, &config));
    }
}

/// Redis's `used_memory`, in bytes.
async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> usize {
    let info: String = redis::cmd("INFO").arg("memory").query_async(con).await.expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// Fills 1,000 rooms' histories in Redis and prints what each costs there, then deletes them.
async fn redis_memory_per_room(url: &str, config: &HistoryConfig) {
    let rooms = 1_000;
    let client = redis::Client::open(url).expect("redis url");
    let mut con = client.get_multiplexed_async_connection().await.expect("redis");
    let store = goim_logic::store::RedisConfig { url: url.to_string(), ..Default::default() };
    let store = Arc::new(goim_logic::RedisStore::connect(&store).await.expect("redis"));
    let history = goim_logic::RedisHistory::new(store, config);
    let stream = |r: usize| format!("room:bench-memory://{r}");
    let before = used_memory(&mut con).await;
    for r in 0..rooms {
        for _ in 0..config.size {
            history.append(&stream(r), 1000, &Bytes::from_static(BODY)).await.unwrap();
        }
    }
    let per_room = used_memory(&mut con).await.saturating_sub(before) / rooms;
    eprintln!(
        "redis history memory: {per_room} bytes per room with {} pushes of {} bytes kept ({} per push, body included)",
        config.size,
        BODY.len(),
        per_room / config.size
    );
    for r in 0..rooms {
        let s = stream(r);
        let _: () = redis::cmd("DEL")
            .arg(format!("goim_rs_h{{{s}}}m"))
            .arg(format!("goim_rs_h{{{s}}}l"))
            .query_async(&mut con)
            .await
            .expect("DEL");
    }
}

criterion_group!(benches, push_room, memory_per_room);
criterion_main!(benches);
