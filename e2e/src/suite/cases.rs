//! The cases, in the order they run. Each returns the lines it reports, or the reason it failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use goim_operator::render::Tier;
use goim_test_support::client::Transport;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Env;
use super::fleet::{Dial, Fleet, Spec, Sub, account};
use super::push::Pusher;

/// `n` clients named `{prefix}-{i}`: WebSocket and TCP alternately, two devices per user (mid),
/// spread over `rooms` rooms `live://{prefix}-r{j}`.
pub fn specs(prefix: &str, mid_base: i64, n: usize, rooms: usize, resume: bool) -> Vec<Spec> {
    (0..n)
        .map(|i| Spec {
            mid: mid_base + (i / 2) as i64,
            key: format!("{prefix}-{i}"),
            room: format!("live://{prefix}-r{}", i % rooms.max(1)),
            transport: if i % 2 == 0 { Transport::Ws } else { Transport::Tcp },
            resume,
        })
        .collect()
}

fn transports(subs: &[Arc<Sub>], idx: &[usize]) -> String {
    let ws = idx.iter().filter(|&&i| subs[i].spec.transport == Transport::Ws).count();
    format!("{ws} WebSocket, {} TCP", idx.len() - ws)
}

/// Reconnects per client (authentications after the first): min, median, max, and how many
/// clients reconnected at all.
fn reconnects(subs: &[Arc<Sub>]) -> String {
    let mut r: Vec<u64> = subs
        .iter()
        .map(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(1))
        .collect();
    r.sort_unstable();
    if r.is_empty() {
        return "no clients".into();
    }
    let moved = r.iter().filter(|&&n| n > 0).count();
    format!(
        "reconnects per client min {} median {} max {} ({moved} of {} clients reconnected)",
        r[0],
        r[r.len() / 2],
        r[r.len() - 1],
        r.len()
    )
}

async fn broadcast_reaches_all(env: &Env, fleet: &Fleet, marker: &str) -> Result<Duration> {
    let t0 = Instant::now();
    env.pusher.all(format!("m {marker}")).await?;
    let missing = fleet.saw(marker, Duration::from_secs(20), |_| true).await;
    ensure!(
        missing.is_empty(),
        "broadcast {marker}: {} of {} clients did not get it (first: {:?})",
        missing.len(),
        fleet.subs.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(t0.elapsed())
}

pub async fn delivery(env: &Env) -> Result<Vec<String>> {
    let fleet = Fleet::start(env.dial.clone(), specs("d", 10_000, 40, 4, false));
    fleet.all_connected(Duration::from_secs(60)).await?;
    let mut out = vec![format!(
        "40 clients connected through the comet Service ({})",
        transports(&fleet.subs, &(0..40).collect::<Vec<_>>())
    )];
    let quiet = Duration::from_secs(2);

    // By key: only that connection.
    for target in [0usize, 1] {
        let key = fleet.subs[target].spec.key.clone();
        let marker = format!("key-{target}");
        env.pusher.keys(&[&key], format!("m {marker}")).await?;
        let missing = fleet.saw(&marker, Duration::from_secs(10), |s| s.key == key).await;
        ensure!(missing.is_empty(), "push to key {key}: not delivered");
        tokio::time::sleep(quiet).await;
        let who = fleet.who_saw(&marker);
        ensure!(who == [target], "push to key {key} reached {who:?}");
        out.push(format!("by key ({:?}): only {key}", fleet.subs[target].spec.transport));
    }
    // By mid: both devices of the user, nobody else.
    let mid = fleet.subs[2].spec.mid;
    env.pusher.mids(&[mid], "m mid".into()).await?;
    let missing = fleet.saw("mid", Duration::from_secs(10), |s| s.mid == mid).await;
    ensure!(missing.is_empty(), "push to mid {mid}: clients {missing:?} did not get it");
    tokio::time::sleep(quiet).await;
    let who = fleet.who_saw("mid");
    ensure!(
        who.iter().all(|&i| fleet.subs[i].spec.mid == mid) && who.len() == 2,
        "push to mid {mid} reached {who:?}"
    );
    out.push(format!("by mid {mid}: its 2 devices ({})", transports(&fleet.subs, &who)));
    // By room.
    let room = fleet.subs[3].spec.room.clone();
    env.pusher.room(&room, "m room".into()).await?;
    let missing = fleet.saw("room", Duration::from_secs(10), |s| s.room == room).await;
    ensure!(missing.is_empty(), "push to room {room}: clients {missing:?} did not get it");
    tokio::time::sleep(quiet).await;
    let who = fleet.who_saw("room");
    ensure!(who.iter().all(|&i| fleet.subs[i].spec.room == room), "push to room {room} reached {who:?}");
    out.push(format!("by room {room}: its {} members ({})", who.len(), transports(&fleet.subs, &who)));
    // Broadcast.
    let took = broadcast_reaches_all(env, &fleet, "all").await?;
    out.push(format!("broadcast: all 40 in {:.1} s", took.as_secs_f64()));
    fleet.stop().await;
    Ok(out)
}

/// Clients that have been told to drain at least once.
fn drained(subs: &[Arc<Sub>]) -> usize {
    subs.iter().filter(|s| s.drained.load(std::sync::atomic::Ordering::Relaxed) > 0).count()
}

/// 2 → 4 → 2 comets. A second wave of clients joins at 4, so the comets removed on the way back
/// hold clients whatever comets the operator picks (it drains the emptiest): those clients are
/// drained, reconnect to the comets that stay, and keep receiving.
pub async fn scale(env: &Env) -> Result<Vec<String>> {
    let c = &env.cluster;
    let first = Fleet::start(env.dial.clone(), specs("s", 20_000, 200, 10, true));
    first.all_connected(Duration::from_secs(60)).await?;
    broadcast_reaches_all(env, &first, "s-before").await?;
    let mut out = vec!["200 clients on 2 comets".to_string()];

    c.patch_spec(json!({"comet": {"replicas": 4}})).await?;
    let took = c.until_ready(4, Duration::from_secs(180)).await?;
    let pods = c.ready_comets().await?.len();
    ensure!(pods == 4, "{pods} ready comet pods, not 4");
    first.all_connected(Duration::from_secs(60)).await?;
    let reach = broadcast_reaches_all(env, &first, "s-up").await?;
    let second = Fleet::start(env.dial.clone(), specs("s2", 21_000, 200, 10, true));
    second.all_connected(Duration::from_secs(60)).await?;
    out.push(format!(
        "to 4 comets: Ready in {:.0} s; every client reachable (broadcast to all 200 in {:.1} s); 200 more clients joined",
        took.as_secs_f64(),
        reach.as_secs_f64()
    ));

    c.patch_spec(json!({"comet": {"replicas": 2}})).await?;
    let took = c.until_ready(2, Duration::from_secs(180)).await?;
    let pods = c.ready_comets().await?.len();
    ensure!(pods == 2, "{pods} ready comet pods, not 2");
    first.all_connected(Duration::from_secs(60)).await?;
    second.all_connected(Duration::from_secs(60)).await?;
    let t0 = Instant::now();
    env.pusher.all("m s-down".into()).await?;
    for (name, fleet) in [("first", &first), ("second", &second)] {
        let missing = fleet.saw("s-down", Duration::from_secs(20), |_| true).await;
        ensure!(
            missing.is_empty(),
            "after 4 → 2: {} of 200 clients of the {name} wave did not get the broadcast (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let reach = t0.elapsed();
    let (a, b) = (first.stop().await, second.stop().await);
    let all: Vec<Arc<Sub>> = a.into_iter().chain(b).collect();
    let moved = drained(&all);
    ensure!(moved > 0, "scaling 4 → 2 drained no client: the removed comets held none");
    out.push(format!(
        "to 2 comets: Ready in {:.0} s; {moved} of 400 clients drained and reconnected; every client reachable (broadcast to all 400 in {:.1} s)",
        took.as_secs_f64(),
        reach.as_secs_f64()
    ));
    out.push(reconnects(&all));
    Ok(out)
}

/// Pushes numbered messages to `rooms` round-robin at `rate` per second from scheduled times,
/// until `stop`; each push is its own task, so one slow answer delays no other. Returns, per
/// room, the numbers logic accepted, and the refused and late (sent over 1 s after their
/// time) pushes.
async fn publish(
    pusher: Pusher,
    rooms: Vec<String>,
    rate: u32,
    stop: CancellationToken,
) -> (BTreeMap<String, Vec<u64>>, u64, u64) {
    let accepted = Arc::new(parking_lot::Mutex::new(BTreeMap::<String, Vec<u64>>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut late = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = tokio::time::Instant::now();
    let mut counters = vec![0u64; rooms.len()];
    for k in 0u64.. {
        let at = t0 + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        if tokio::time::Instant::now() > at + Duration::from_secs(1) {
            late += 1;
        }
        let r = (k as usize) % rooms.len();
        counters[r] += 1;
        let (n, room, p, acc, refused) =
            (counters[r], rooms[r].clone(), pusher.clone(), accepted.clone(), refused.clone());
        tasks.spawn(async move {
            match p.room(&room, format!("n {n}")).await {
                Ok(()) => acc.lock().entry(room).or_default().push(n),
                Err(e) => {
                    tracing::warn!(error = %e, "a numbered push was refused");
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let accepted = accepted.lock().clone();
    (accepted, refused.load(std::sync::atomic::Ordering::Relaxed), late)
}

/// Numbered room pushes at `rate` to `n` resuming clients while a comet config change rolls the
/// comets; per client, what it missed, got twice or out of order, and how often it reconnected.
pub async fn rollout(env: &Env, n: usize, rooms: usize, rate: u32) -> Result<Vec<String>> {
    let c = &env.cluster;
    let fleet = Fleet::start(env.dial.clone(), specs("r", 30_000, n, rooms, true));
    fleet.all_connected(Duration::from_secs(120)).await?;
    let before: Vec<String> = c.pods(Tier::Comet).await?.iter().map(|p| p.name_any()).collect();
    let room_names: Vec<String> = (0..rooms).map(|j| format!("live://r-r{j}")).collect();
    let stop = CancellationToken::new();
    let publisher = tokio::spawn(publish(env.pusher.clone(), room_names, rate, stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A config change: a new config hash on the comets' pod template, so a rolling update.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 1000;
    c.patch_spec(json!({"comet": {"config": format!("[comet]\nmax_connections = {}\n", 100_000 + stamp)}}))
        .await?;
    let rolled =
        c.until("the comet rollout", Duration::from_secs(300), |pc| super::cluster::ready(pc, 2)).await?;
    let t0 = Instant::now();
    loop {
        let now: Vec<String> = c.pods(Tier::Comet).await?.iter().map(|p| p.name_any()).collect();
        if !now.iter().any(|p| before.contains(p)) && c.ready_comets().await?.len() == 2 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("old comet pods still there after 300 s: {now:?} (before {before:?})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rolled = rolled.max(t0.elapsed());
    fleet.all_connected(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let (accepted, refused, late) = publisher.await?;
    // What logic accepted last needs the queue, job and a comet to reach everyone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let subs = fleet.stop().await;
    let mut totals = super::fleet::Account::default();
    let (mut with_gaps, mut with_dups, mut incomplete) = (0, 0, 0);
    for s in &subs {
        let expected = accepted.get(&s.spec.room).map(Vec::as_slice).unwrap_or_default();
        let seen = s.seen.lock();
        let a = account(expected, &seen.numbers);
        with_gaps += usize::from(a.missing > 0);
        with_dups += usize::from(a.duplicated > 0);
        incomplete += seen.incomplete;
        totals.expected += a.expected;
        totals.missing += a.missing;
        totals.duplicated += a.duplicated;
        totals.reordered += a.reordered;
    }
    let pushed: usize = accepted.values().map(Vec::len).sum();
    let out = vec![
        format!(
            "{n} resuming clients in {rooms} rooms; {pushed} numbered room pushes at {rate}/s ({refused} refused, {late} sent late)"
        ),
        format!("comets rolled in {:.0} s (2 old pods replaced)", rolled.as_secs_f64()),
        format!(
            "deliveries expected {}: missing {} ({with_gaps} clients with gaps), duplicated {} ({with_dups} clients), reordered {}, incomplete resumes {incomplete}",
            totals.expected, totals.missing, totals.duplicated, totals.reordered
        ),
        reconnects(&subs),
    ];
    for l in &out {
        tracing::info!("rollout: {l}");
    }
    ensure!(refused == 0, "{refused} pushes refused during the rollout: {out:?}");
    ensure!(totals.missing == 0 && totals.duplicated == 0, "gaps or duplicates with resume: {out:?}");
    ensure!(incomplete == 0, "{incomplete} resumes were incomplete: {out:?}");
    Ok(out)
}

pub async fn autoscale(env: &Env, n: usize) -> Result<Vec<String>> {
    let c = &env.cluster;
    let target = 1000;
    let want = n.div_ceil(target) as i32;
    c.patch_spec(json!({"autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": want + 1,
        "targetConnectionsPerComet": target, "scaleDownStabilizationSeconds": 30}}))
        .await?;
    let fleet = Fleet::start(env.dial.clone(), specs("a", 40_000, n, 30, false));
    fleet.all_connected(Duration::from_secs(180)).await?;
    let up = c.until_ready(want, Duration::from_secs(180)).await?;
    let pc = c.get().await?;
    let connections = pc.status.as_ref().map(|s| s.connections).unwrap_or_default();
    let mut out = vec![format!(
        "{n} clients, target {target} per comet: {want} comets Ready {:.0} s after the last client connected (status connections {connections})",
        up.as_secs_f64()
    )];
    fleet.stop().await;
    let left = Instant::now();
    let down = c.until_ready(2, Duration::from_secs(240)).await?;
    out.push(format!(
        "clients gone: back to 2 comets after {:.0} s (stabilisation window 30 s)",
        down.max(left.elapsed()).as_secs_f64()
    ));
    c.patch_spec(json!({"autoscaling": {"enabled": false}, "comet": {"replicas": 2}})).await?;
    c.until_ready(2, Duration::from_secs(120)).await?;
    Ok(out)
}

/// kill -9 of one comet's process (the test node: the pod's containerID is `e2e://<pid>`);
/// elsewhere the pod is deleted with no grace period, which a kubelet carries out with SIGKILL.
pub async fn kill(env: &Env) -> Result<Vec<String>> {
    let c = &env.cluster;
    let fleet = Fleet::start(env.dial.clone(), specs("k", 50_000, 100, 5, true));
    fleet.all_connected(Duration::from_secs(60)).await?;
    broadcast_reaches_all(env, &fleet, "k-before").await?;
    let pods = c.ready_comets().await?;
    ensure!(!pods.is_empty(), "no ready comet");
    let pod = &pods[0];
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "comet"))
        .and_then(|c| c.container_id.clone())
        .unwrap_or_default();
    let how = if let Some(pid) = id.strip_prefix("e2e://").and_then(|p| p.parse::<i32>().ok()) {
        // SAFETY: kill(2) with a pid the node reported for this container.
        let r = unsafe { libc::kill(pid, libc::SIGKILL) };
        ensure!(r == 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        format!("kill -9 of {} (pid {pid})", pod.name_any())
    } else {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client.clone(), &c.ns);
        pods.delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await?;
        format!("{} deleted with grace 0 ({id})", pod.name_any())
    };
    let t0 = Instant::now();
    // Its clients see their connection end, reconnect through the Service and resume.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.all_connected(Duration::from_secs(60)).await?;
    let took = t0.elapsed();
    broadcast_reaches_all(env, &fleet, "k-after").await?;
    c.until_ready(2, Duration::from_secs(120)).await?;
    let subs = fleet.stop().await;
    let moved = subs.iter().filter(|s| s.connects.load(std::sync::atomic::Ordering::Relaxed) > 1).count();
    ensure!(moved > 0, "no client reconnected after {how}");
    Ok(vec![
        how,
        format!(
            "{moved} of 100 clients reconnected, all connected again {:.1} s after the kill, and every client got the next broadcast",
            took.as_secs_f64()
        ),
    ])
}

pub async fn delete(env: &Env) -> Result<Vec<String>> {
    let (took, left) = env.cluster.delete_all(Duration::from_secs(120)).await?;
    Ok(vec![format!(
        "PushCluster deleted: it and its {} kinds of children gone in {:.1} s",
        left.len(),
        took.as_secs_f64()
    )])
}

/// Checks a Dial for the comet Service: one client connects and authenticates.
pub async fn probe_dial(dial: Arc<Dial>) -> Result<()> {
    let fleet = Fleet::start(dial, specs("probe", 1, 2, 1, false));
    let r = fleet.all_connected(Duration::from_secs(60)).await;
    fleet.stop().await;
    r
}
