//! The Redis store against a real Redis: the store contract, goim's key layout (read back with raw
//! commands, and a record written the way Go goim writes it), TTLs, and failing fast while Redis
//! is down then recovering.
//!
//! Run by the test script after `scripts/services.sh start`, with `--include-ignored`. A missing
//! `GOIM_TEST_REDIS_URL` (or `GOIM_TEST_REDIS_SERVER`) fails these tests; it never skips them.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use goim_api::Online;
use goim_logic::store::{self, RedisConfig, SERVERS_KEY};
use goim_logic::{RedisStore, Store};
use goim_test_support::Scratch;
use goim_test_support::services::Redis;
use tokio::time::Instant;

fn redis_url() -> String {
    std::env::var("GOIM_TEST_REDIS_URL").expect(
        "GOIM_TEST_REDIS_URL is not set; start Redis with `scripts/services.sh start` and source its env",
    )
}

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        timeout: Duration::from_millis(500),
        pool: 2,
        ..RedisConfig::default()
    }
}

async fn store() -> RedisStore {
    let url = redis_url();
    RedisStore::connect(&config(&url)).await.unwrap_or_else(|e| panic!("GOIM_TEST_REDIS_URL={url}: {e}"))
}

/// A plain connection for reading and writing goim's keys directly.
async fn raw() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url())?;
    Ok(client.get_multiplexed_async_connection().await?)
}

fn unique(s: &str) -> String {
    format!("{}-{s}", uuid::Uuid::new_v4().simple())
}

fn unique_mid() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_fields().0 >> 1) * 1000 + 1
}

#[tokio::test]
#[ignore = "needs redis"]
async fn redis_store_passes_the_store_contract() {
    store::contract::store_contract(store().await).await;
}

#[tokio::test]
#[ignore = "needs redis"]
async fn mappings_are_written_in_goims_layout_with_the_ttl() -> Result<()> {
    let store = store().await.with_ttl(Duration::from_secs(600));
    let mut raw = raw().await?;
    let (mid, key, server) = (unique_mid(), unique("key"), unique("comet"));
    store.add_mapping(mid, &key, &server).await?;

    let by_key: String = redis::cmd("GET").arg(format!("key_{key}")).query_async(&mut raw).await?;
    let by_mid: HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("mid_{mid}")).query_async(&mut raw).await?;
    assert_eq!(by_key, server);
    assert_eq!(by_mid, HashMap::from([(key.clone(), server.clone())]));
    for k in [format!("key_{key}"), format!("mid_{mid}")] {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut raw).await?;
        assert!((590..=600).contains(&ttl), "{k} has TTL {ttl}");
    }

    // A heartbeat restarts both TTLs.
    for k in [format!("key_{key}"), format!("mid_{mid}")] {
        let () = redis::cmd("EXPIRE").arg(&k).arg(5).query_async(&mut raw).await?;
    }
    assert!(store.expire_mapping(mid, &key, &server).await?);
    for k in [format!("key_{key}"), format!("mid_{mid}")] {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut raw).await?;
        assert!(ttl >= 590, "{k} was not refreshed: TTL {ttl}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn a_late_disconnect_leaves_the_newer_mapping_in_both_keys() -> Result<()> {
    let store = store().await;
    let mut raw = raw().await?;
    let (mid, key) = (unique_mid(), unique("key"));
    store.add_mapping(mid, &key, "comet-old").await?;
    store.add_mapping(mid, &key, "comet-new").await?;
    assert!(!store.del_mapping(mid, &key, "comet-old").await?);
    let by_key: Option<String> = redis::cmd("GET").arg(format!("key_{key}")).query_async(&mut raw).await?;
    let by_mid: Option<String> =
        redis::cmd("HGET").arg(format!("mid_{mid}")).arg(&key).query_async(&mut raw).await?;
    assert_eq!((by_key.as_deref(), by_mid.as_deref()), (Some("comet-new"), Some("comet-new")));
    assert!(store.del_mapping(mid, &key, "comet-new").await?);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("key_{key}"))
        .arg(format!("mid_{mid}"))
        .query_async(&mut raw)
        .await?;
    assert_eq!(exists, 0, "the last key of a mid deletes the mid hash too");
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn an_online_record_written_by_go_goim_is_read() -> Result<()> {
    let store = store().await;
    let mut raw = raw().await?;
    let server = unique("go-comet");
    // What goim's AddServerOnline writes: one HSET per non-empty shard, then EXPIRE.
    let shards = [
        (
            "7",
            format!(
                r#"{{"server":"{server}","room_count":{{"live://1000":12,"live://7":1}},"updated":1767225600}}"#
            ),
        ),
        ("42", format!(r#"{{"server":"{server}","room_count":{{"chat://a":3}},"updated":1767225610}}"#)),
    ];
    for (field, json) in &shards {
        let () =
            redis::cmd("HSET").arg(format!("ol_{server}")).arg(field).arg(json).query_async(&mut raw).await?;
    }
    let () = redis::cmd("EXPIRE").arg(format!("ol_{server}")).arg(1800).query_async(&mut raw).await?;

    let (online, updated) = store.server_online(&server).await?.context("record not found")?;
    let want = HashMap::from([("live://1000".into(), 12), ("live://7".into(), 1), ("chat://a".into(), 3)]);
    assert_eq!(online.room_count, want);
    assert_eq!(online.server, server);
    assert_eq!((online.conn_count, online.ip_count), (0, 0), "goim's record has no counts");
    assert_eq!(updated, UNIX_EPOCH + Duration::from_secs(1_767_225_610), "the newest shard's stamp");
    store.del_server_online(&server).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn an_online_report_is_goim_json_and_replaces_every_shard() -> Result<()> {
    let store = store().await.with_ttl(Duration::from_secs(600));
    let mut raw = raw().await?;
    let server = unique("comet");
    let rooms: HashMap<String, i32> = (0..100).map(|i| (format!("live://{i}"), i + 1)).collect();
    let report = Online { server: server.clone(), room_count: rooms, conn_count: 5050, ip_count: 77 };
    let now = SystemTime::now();
    store.add_server_online(&server, &report, now).await?;

    let fields: HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("ol_{server}")).query_async(&mut raw).await?;
    assert!(fields.len() > 30 && fields.len() <= 64, "{} shards", fields.len());
    let mut total = 0;
    for (field, json) in &fields {
        let shard: u32 = field.parse()?;
        assert!(shard < 64);
        let v: serde_json::Value = serde_json::from_str(json)?;
        assert_eq!(v["server"], server.as_str());
        assert_eq!(v["updated"], now.duration_since(UNIX_EPOCH)?.as_secs());
        assert_eq!((v["conn_count"].as_i64(), v["ip_count"].as_i64()), (Some(5050), Some(77)));
        total += v["room_count"].as_object().context("room_count")?.len();
    }
    assert_eq!(total, 100, "every room is in exactly one shard");
    let ttl: i64 = redis::cmd("TTL").arg(format!("ol_{server}")).query_async(&mut raw).await?;
    assert!((590..=600).contains(&ttl), "ol_ TTL {ttl}");

    let smaller = Online { room_count: HashMap::from([("live://1".into(), 1)]), ..report.clone() };
    store.add_server_online(&server, &smaller, SystemTime::now()).await?;
    let len: i64 = redis::cmd("HLEN").arg(format!("ol_{server}")).query_async(&mut raw).await?;
    assert_eq!(len, 1, "shards of rooms that emptied are gone");
    store.del_server_online(&server).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis"]
async fn a_server_that_stopped_reporting_ages_out_of_servers() -> Result<()> {
    let store = store().await.with_ttl(Duration::from_secs(60));
    let mut raw = raw().await?;
    let (live, gone) = (unique("live"), unique("gone"));
    let report = |s: &str| Online { server: s.to_owned(), ..Online::default() };
    store.add_server_online(&gone, &report(&gone), SystemTime::now() - Duration::from_secs(3600)).await?;
    store.add_server_online(&live, &report(&live), SystemTime::now()).await?;
    let servers = store.servers().await?;
    assert!(servers.contains(&live));
    assert!(!servers.contains(&gone), "a report older than the TTL is not listed");
    let score: Option<f64> = redis::cmd("ZSCORE").arg(SERVERS_KEY).arg(&gone).query_async(&mut raw).await?;
    assert_eq!(score, None, "and was trimmed from the set");
    store.del_server_online(&live).await?;
    store.del_server_online(&gone).await?;
    Ok(())
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_fast_with_a_clear_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = RedisStore::connect(&config(&format!("redis://127.0.0.1:{port}/0"))).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let message = err.to_string();
    assert!(matches!(err, store::Error::Unavailable(_)), "{err:?}");
    assert!(message.contains("cannot connect to redis at redis://127.0.0.1"), "{message}");
}

/// A Redis of this test's own, so stopping it disturbs no other test.
async fn own_redis(dir: &Scratch) -> Redis {
    Redis::start(dir.0.clone()).await
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn while_redis_is_down_calls_fail_within_the_timeout_and_recover_when_it_returns() -> Result<()> {
    let dir = Scratch::new("redis-store");
    let mut redis = own_redis(&dir).await;
    let timeout = Duration::from_millis(500);
    let store = RedisStore::connect(&config(&redis.url())).await?;
    store.add_mapping(1, "k", "comet-a").await?;

    redis.stop();
    for call in 0..3 {
        let started = Instant::now();
        let err = store.servers_by_keys(&["k".into()]).await.unwrap_err();
        let took = started.elapsed();
        assert!(took <= timeout + Duration::from_millis(200), "call {call} took {took:?}");
        assert!(matches!(err, store::Error::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("redis servers_by_keys at redis://127.0.0.1"), "{err}");
    }

    redis.run().await;
    let started = Instant::now();
    let mut attempts = 0;
    let got = loop {
        attempts += 1;
        match store.add_mapping(1, "k", "comet-b").await {
            Ok(()) => break store.servers_by_keys(&["k".into()]).await?,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("attempt {attempts} after restart: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("still failing {:?} after redis came back: {e}", started.elapsed()),
        }
    };
    assert_eq!(got, vec![Some("comet-b".to_string())]);
    eprintln!("recovered after {attempts} attempt(s), {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn the_epoch_changes_when_redis_restarts_empty_and_two_stores_agree_on_it() -> Result<()> {
    let dir = Scratch::new("redis-store");
    let mut redis = own_redis(&dir).await;
    let url = redis.url();
    let (a, b) = (RedisStore::connect(&config(&url)).await?, RedisStore::connect(&config(&url)).await?);
    let before = a.epoch().await?;
    assert_eq!(b.epoch().await?, before, "two logic instances read one epoch");
    assert_eq!(a.epoch().await?, before, "the epoch holds while the data lives");

    redis.stop();
    redis.run().await; // --save '': it comes back empty
    // Each store's first calls after the restart may meet its dropped connections.
    async fn epoch_after_restart(store: &RedisStore) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match store.epoch().await {
                Ok(e) => return Ok(e),
                Err(e) if Instant::now() < deadline => eprintln!("epoch after restart: {e}"),
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after = epoch_after_restart(&a).await?;
    assert_ne!(after, before, "an empty Redis is a new epoch");
    assert_eq!(epoch_after_restart(&b).await?, after, "every instance sees the new epoch, not one each");
    Ok(())
}
