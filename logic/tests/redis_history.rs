//! The Redis history against a real Redis: the history contract (the same suite the memory
//! history passes), the key layout and TTLs, two logic instances sharing one stream, and a
//! Redis restarted empty changing the epoch.
//!
//! Run by the test script after `scripts/services.sh start`, with `--include-ignored`. A missing
//! `GOIM_TEST_REDIS_URL` fails these tests; it never skips them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use goim_api::Position;
use goim_logic::history::{self, History, HistoryConfig};
use goim_logic::store::RedisConfig;
use goim_logic::{RedisHistory, RedisStore};
use goim_test_support::Scratch;
use goim_test_support::services::Redis;
use tokio::time::Instant;

fn redis_url() -> String {
    std::env::var("GOIM_TEST_REDIS_URL").expect(
        "GOIM_TEST_REDIS_URL is not set; start Redis with `scripts/services.sh start` and source its env",
    )
}

async fn history_at(url: &str, config: &HistoryConfig) -> RedisHistory {
    let redis = RedisConfig {
        url: url.to_owned(),
        timeout: Duration::from_millis(500),
        pool: 2,
        ..RedisConfig::default()
    };
    let store = RedisStore::connect(&redis).await.unwrap_or_else(|e| panic!("redis at {url}: {e}"));
    RedisHistory::new(Arc::new(store), config)
}

fn unique(s: &str) -> String {
    format!("room:{}-{s}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn redis_history_passes_the_history_contract() {
    history::contract::history_contract(history_at(&redis_url(), &history::contract::config()).await).await;
}

#[tokio::test]
#[ignore = "needs redis"]
async fn a_stream_is_two_keys_with_one_hash_tag_and_their_ttls() -> Result<()> {
    let config = HistoryConfig { size: 3, ttl: Duration::from_secs(60), ..HistoryConfig::default() };
    let h = history_at(&redis_url(), &config).await;
    let stream = unique("layout");
    for i in 0..5 {
        h.append(&stream, 1000, &Bytes::from(format!("m{i}"))).await?;
    }
    let client = redis::Client::open(redis_url())?;
    let mut raw = client.get_multiplexed_async_connection().await?;
    let meta: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("goim_rs_h{{{stream}}}m")).query_async(&mut raw).await?;
    assert_eq!(meta.get("o").map(String::as_str), Some("5"));
    let list: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("goim_rs_h{{{stream}}}l"))
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await?;
    assert_eq!(list.len(), 3, "capped at history.size");
    assert!(
        list[0].starts_with(b"3:") && list[0].ends_with(b":1000:m2"),
        "{:?}",
        String::from_utf8_lossy(&list[0])
    );
    let list_ttl: i64 =
        redis::cmd("PTTL").arg(format!("goim_rs_h{{{stream}}}l")).query_async(&mut raw).await?;
    let meta_ttl: i64 =
        redis::cmd("PTTL").arg(format!("goim_rs_h{{{stream}}}m")).query_async(&mut raw).await?;
    assert!((50_000..=60_000).contains(&list_ttl), "list ttl {list_ttl} ms");
    assert!(meta_ttl > 23 * 3600 * 1000, "meta ttl {meta_ttl} ms (stream_ttl 24h)");
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn two_logic_instances_share_one_gapless_stream() -> Result<()> {
    let config = HistoryConfig::default();
    let (a, b) = (history_at(&redis_url(), &config).await, history_at(&redis_url(), &config).await);
    let stream = unique("shared");
    let mut offsets = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { &a } else { &b };
        offsets.push(h.append(&stream, 1, &Bytes::new()).await?);
    }
    assert_eq!(offsets.iter().map(|p| p.offset).collect::<Vec<_>>(), (1..=20).collect::<Vec<u64>>());
    assert!(offsets.iter().all(|p| p.epoch == offsets[0].epoch), "one epoch for both instances");
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_redis_restarted_empty_starts_a_new_epoch_and_recovery_says_incomplete() -> Result<()> {
    let dir = Scratch::new("redis-history");
    let mut redis = Redis::start(dir.0.clone()).await;
    let config = HistoryConfig::default();
    let h = history_at(&redis.url(), &config).await;
    let stream = unique("restart");
    let mut seen = Position::default();
    for _ in 0..3 {
        seen = h.append(&stream, 1, &Bytes::from_static(b"before")).await?;
    }
    redis.stop();
    redis.run().await; // --save '': it comes back empty
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        match h.append(&stream, 1, &Bytes::from_static(b"after")).await {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => eprintln!("append after restart: {e}"),
            Err(e) => bail!("history still failing after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.offset, 1, "the offsets restart");
    assert_ne!(after.epoch, seen.epoch, "an empty Redis is a new epoch");
    let r = h.read(&stream).await?.since(seen, config.ttl);
    assert!(!r.complete, "the client's history is gone");
    assert_eq!(r.entries.iter().map(|e| &e.body[..]).collect::<Vec<_>>(), [&b"after"[..]]);
    Ok(())
}
