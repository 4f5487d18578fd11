//! The [`Store`] contract as one test suite, run against every implementation (the memory store
//! in this crate's tests; the Redis store against a real server).
//!
//! This is test support compiled into the library so one suite serves both; its assertions
//! panic on purpose, like any test. Keys and servers carry a random prefix, so the suite can run
//! against a shared Redis database and be rerun.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use goim_api::Online;

use super::Store;

/// Runs every contract check against `store`. Panics on the first violation.
pub async fn store_contract(store: impl Store) {
    let ns = uuid::Uuid::new_v4().simple().to_string();
    let n = |s: &str| format!("{ns}-{s}");
    let mid = |i: i64| i64::from_str_radix(&ns[..8], 16).unwrap_or(1) * 1000 + i;

    empty_inputs_give_empty_outputs(&store).await;
    added_keys_resolve_to_their_server(&store, &n).await;
    mids_resolve_to_all_their_keys(&store, &n, mid(1)).await;
    mid_zero_keeps_only_the_key_mapping(&store, &n).await;
    newest_mapping_of_a_key_wins(&store, &n, mid(2)).await;
    expire_reports_whether_the_mapping_exists(&store, &n, mid(3)).await;
    del_removes_the_mapping_from_key_and_mid(&store, &n, mid(4)).await;
    late_disconnect_from_an_old_server_deletes_nothing(&store, &n, mid(5)).await;
    online_records_round_trip_and_replace(&store, &n).await;
    dropping_a_server_deletes_its_routes_only(&store, &n, mid(6)).await;
    the_epoch_stays_while_the_data_lives(&store).await;
}

async fn the_epoch_stays_while_the_data_lives(store: &impl Store) {
    let first = store.epoch().await.unwrap();
    assert!(!first.is_empty(), "an epoch is never empty (empty means: a store without one)");
    for _ in 0..3 {
        assert_eq!(store.epoch().await.unwrap(), first, "the epoch changed with the data intact");
    }
}

async fn dropping_a_server_deletes_its_routes_only(
    store: &impl Store,
    n: &impl Fn(&str) -> String,
    mid: i64,
) {
    let (dead, live) = (n("dead"), n("live"));
    for i in 0..7 {
        store.add_mapping(mid, &n(&format!("d{i}")), &dead).await.unwrap();
    }
    store.add_mapping(0, &n("anon"), &dead).await.unwrap();
    store.add_mapping(mid, &n("alive"), &live).await.unwrap();
    // Moved to the live comet (a reconnect with the same key): the newer mapping stays.
    store.add_mapping(mid, &n("d0"), &live).await.unwrap();

    let mut routes = 0;
    for _ in 0..20 {
        let page = store.drop_server(&dead, 3).await.unwrap();
        routes += page.routes;
        if !page.more {
            break;
        }
    }
    assert_eq!(routes, 7, "d1..d6 and anon; d0 had moved");
    let keys: Vec<String> = ["d0", "d1", "d6", "anon", "alive"].iter().map(|k| n(k)).collect();
    assert_eq!(
        store.servers_by_keys(&keys).await.unwrap(),
        vec![Some(live.clone()), None, None, None, Some(live.clone())]
    );
    let (found, online) = store.keys_by_mids(&[mid]).await.unwrap();
    assert_eq!(found, HashMap::from([(n("d0"), live.clone()), (n("alive"), live.clone())]));
    assert_eq!(online, vec![mid]);
    assert_eq!(store.drop_server(&dead, 3).await.unwrap(), super::Dropped { routes: 0, more: false });
}

async fn empty_inputs_give_empty_outputs(store: &impl Store) {
    assert_eq!(store.servers_by_keys(&[]).await.unwrap(), Vec::<Option<String>>::new());
    let (keys, mids) = store.keys_by_mids(&[]).await.unwrap();
    assert!(keys.is_empty() && mids.is_empty());
}

async fn added_keys_resolve_to_their_server(store: &impl Store, n: &impl Fn(&str) -> String) {
    store.add_mapping(0, &n("k1"), &n("comet-a")).await.unwrap();
    store.add_mapping(0, &n("k2"), &n("comet-b")).await.unwrap();
    let got = store.servers_by_keys(&[n("k2"), n("unknown"), n("k1")]).await.unwrap();
    assert_eq!(got, vec![Some(n("comet-b")), None, Some(n("comet-a"))], "servers_by_keys keeps input order");
}

async fn mids_resolve_to_all_their_keys(store: &impl Store, n: &impl Fn(&str) -> String, mid: i64) {
    store.add_mapping(mid, &n("m1-phone"), &n("comet-a")).await.unwrap();
    store.add_mapping(mid, &n("m1-web"), &n("comet-b")).await.unwrap();
    let (keys, online) = store.keys_by_mids(&[mid + 500, mid, mid]).await.unwrap();
    let want = HashMap::from([(n("m1-phone"), n("comet-a")), (n("m1-web"), n("comet-b"))]);
    assert_eq!(keys, want);
    assert_eq!(online, vec![mid], "only mids with keys are online, each once");
}

async fn mid_zero_keeps_only_the_key_mapping(store: &impl Store, n: &impl Fn(&str) -> String) {
    store.add_mapping(0, &n("anon"), &n("comet-a")).await.unwrap();
    assert_eq!(store.servers_by_keys(&[n("anon")]).await.unwrap(), vec![Some(n("comet-a"))]);
    let (keys, online) = store.keys_by_mids(&[0]).await.unwrap();
    assert!(!keys.contains_key(&n("anon")) && online.is_empty(), "mid 0 must not be a user");
}

async fn newest_mapping_of_a_key_wins(store: &impl Store, n: &impl Fn(&str) -> String, mid: i64) {
    store.add_mapping(mid, &n("moved"), &n("comet-a")).await.unwrap();
    store.add_mapping(mid, &n("moved"), &n("comet-b")).await.unwrap();
    assert_eq!(store.servers_by_keys(&[n("moved")]).await.unwrap(), vec![Some(n("comet-b"))]);
    let (keys, _) = store.keys_by_mids(&[mid]).await.unwrap();
    assert_eq!(keys.get(&n("moved")), Some(&n("comet-b")));
}

async fn expire_reports_whether_the_mapping_exists(
    store: &impl Store,
    n: &impl Fn(&str) -> String,
    mid: i64,
) {
    store.add_mapping(mid, &n("beat"), &n("comet-a")).await.unwrap();
    assert!(store.expire_mapping(mid, &n("beat"), &n("comet-a")).await.unwrap());
    assert!(!store.expire_mapping(mid, &n("never-added"), &n("comet-a")).await.unwrap());
    assert!(!store.expire_mapping(0, &n("never-added"), &n("comet-a")).await.unwrap());
}

async fn del_removes_the_mapping_from_key_and_mid(store: &impl Store, n: &impl Fn(&str) -> String, mid: i64) {
    store.add_mapping(mid, &n("gone"), &n("comet-a")).await.unwrap();
    store.add_mapping(mid, &n("stays"), &n("comet-a")).await.unwrap();
    assert!(store.del_mapping(mid, &n("gone"), &n("comet-a")).await.unwrap());
    assert_eq!(store.servers_by_keys(&[n("gone")]).await.unwrap(), vec![None]);
    let (keys, online) = store.keys_by_mids(&[mid]).await.unwrap();
    assert_eq!(keys, HashMap::from([(n("stays"), n("comet-a"))]));
    assert_eq!(online, vec![mid]);
    assert!(!store.del_mapping(mid, &n("gone"), &n("comet-a")).await.unwrap(), "second delete found nothing");
    assert!(!store.expire_mapping(mid, &n("gone"), &n("comet-a")).await.unwrap());

    assert!(store.del_mapping(mid, &n("stays"), &n("comet-a")).await.unwrap());
    let (keys, online) = store.keys_by_mids(&[mid]).await.unwrap();
    assert!(keys.is_empty() && online.is_empty(), "a mid without keys is offline");
}

async fn late_disconnect_from_an_old_server_deletes_nothing(
    store: &impl Store,
    n: &impl Fn(&str) -> String,
    mid: i64,
) {
    store.add_mapping(mid, &n("race"), &n("comet-old")).await.unwrap();
    store.add_mapping(mid, &n("race"), &n("comet-new")).await.unwrap();
    assert!(!store.del_mapping(mid, &n("race"), &n("comet-old")).await.unwrap());
    assert_eq!(store.servers_by_keys(&[n("race")]).await.unwrap(), vec![Some(n("comet-new"))]);
    let (keys, _) = store.keys_by_mids(&[mid]).await.unwrap();
    assert_eq!(keys.get(&n("race")), Some(&n("comet-new")));
}

async fn online_records_round_trip_and_replace(store: &impl Store, n: &impl Fn(&str) -> String) {
    let server = n("comet-online");
    assert_eq!(store.server_online(&server).await.unwrap(), None);

    let first = Online {
        server: server.clone(),
        room_count: HashMap::from([("live://1".to_string(), 3), ("live://2".to_string(), 1)]),
        conn_count: 4,
        ip_count: 2,
    };
    let updated = SystemTime::now();
    store.add_server_online(&server, &first, updated).await.unwrap();
    let (got, got_updated) = store.server_online(&server).await.unwrap().expect("record just written");
    assert_eq!(got, first);
    let skew = got_updated.duration_since(updated).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
    assert!(skew <= Duration::from_secs(1), "updated off by {skew:?}");
    assert!(store.servers().await.unwrap().contains(&server));

    // A new report replaces the old one: a room that emptied must not keep its count.
    let second = Online {
        server: server.clone(),
        room_count: HashMap::from([("live://1".to_string(), 5)]),
        conn_count: 5,
        ip_count: 3,
    };
    store.add_server_online(&server, &second, SystemTime::now()).await.unwrap();
    assert_eq!(store.server_online(&server).await.unwrap().map(|(o, _)| o), Some(second));

    store.del_server_online(&server).await.unwrap();
    assert_eq!(store.server_online(&server).await.unwrap(), None);
    assert!(!store.servers().await.unwrap().contains(&server));
    store.del_server_online(&server).await.unwrap();
}
