//! What the kubelet builds for a container: its environment (service links, the downward API,
//! `$(VAR)` expansion), its ConfigMap and Secret volumes, and the shell that sets up its mount
//! namespace and execs the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use kube::ResourceExt;

use super::cluster::{Cluster, secret_data};

/// The container's environment as the kubelet builds it: the service variables first, then
/// `env` in order (each may refer to the ones before as `$(NAME)`).
pub fn environment(cluster: &Cluster, spec: &PodSpec, c: &Container, pod: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
        ("HOSTNAME".to_owned(), pod.to_owned()),
        // An empty home: a kubeconfig there would stand in for the ServiceAccount.
        ("HOME".to_owned(), cluster.dir.0.join(pod).join("home").display().to_string()),
    ];
    let (host, port) = &cluster.api;
    let api = format!("tcp://{host}:{port}");
    env.extend([
        ("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
        ("KUBERNETES_PORT".to_owned(), api.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), api),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".to_owned()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone()),
    ]);
    if spec.enable_service_links.unwrap_or(true) {
        env.extend(service_links(&cluster.services));
    }
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    // Neither the CRD (`spec.<tier>.env` is a list of EnvVars) nor the renderer writes envFrom.
    assert!(c.env_from.as_ref().is_none_or(Vec::is_empty), "{pod}: envFrom: extend this test");
    for var in c.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or_default(), &env)),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field(cluster, spec, pod, &f.field_path))
                } else if let Some(r) = &from.secret_key_ref {
                    match cluster.secret_value(&r.name, &r.key) {
                        Some(v) => Some(String::from_utf8(v).unwrap()),
                        None if r.optional == Some(true) => None,
                        None => panic!(
                            "{pod}: env {} refers to Secret key {}/{} which does not exist",
                            var.name, r.name, r.key
                        ),
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let v = cluster
                        .config_maps
                        .get(&r.name)
                        .and_then(|cm| cm.data.as_ref()?.get(&r.key).cloned());
                    match v {
                        Some(v) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => panic!(
                            "{pod}: env {} refers to ConfigMap key {}/{} which does not exist",
                            var.name, r.name, r.key
                        ),
                    }
                } else {
                    panic!("{pod}: env {}: a valueFrom this test does not know: extend it", var.name);
                }
            }
        };
        if let Some(v) = value {
            set(&mut env, var.name.clone(), v);
        }
    }
    env
}

/// The downward API.
pub fn field(cluster: &Cluster, spec: &PodSpec, pod: &str, path: &str) -> String {
    match path {
        "metadata.name" => pod.to_owned(),
        "metadata.namespace" => cluster.ns.clone(),
        "status.podIP" | "status.hostIP" => cluster.pod_ip.to_string(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_else(|| "default".into()),
        other => panic!("{pod}: fieldRef {other}: extend this test"),
    }
}

/// The docker-link style variables the kubelet sets for every Service with a cluster IP.
pub fn service_links(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let spec = svc.spec.as_ref().unwrap();
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else {
            continue;
        };
        let name = svc.name_any().to_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        let url = |p: &k8s_openapi::api::core::v1::ServicePort| {
            format!("{}://{ip}:{}", p.protocol.as_deref().unwrap_or("TCP").to_lowercase(), p.port)
        };
        env.push((format!("{name}_PORT"), url(first)));
        for p in &ports {
            if let Some(port_name) = &p.name {
                env.push((
                    format!("{name}_SERVICE_PORT_{}", port_name.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_uppercase();
            let key = format!("{name}_PORT_{}_{proto}", p.port);
            env.push((format!("{key}_PROTO"), proto.to_lowercase()));
            env.push((format!("{key}_PORT"), p.port.to_string()));
            env.push((format!("{key}_ADDR"), ip.to_owned()));
            env.push((key, url(p)));
        }
    }
    env
}

/// The kubelet's `$(NAME)` expansion: defined names expand, `$$` is a literal `$`, anything else
/// stays as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Files of one mount: (mount path, [(path inside it, contents)]).
pub type Mount = (String, Vec<(String, Vec<u8>)>);

/// The ConfigMap and Secret volumes of the container's mounts, with their files.
pub fn volumes(cluster: &Cluster, spec: &PodSpec, c: &Container, pod: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        assert!(m.sub_path.is_none() && m.sub_path_expr.is_none(), "{pod}: subPath mounts: extend this test");
        assert!(m.mount_path.starts_with('/'), "{pod}: mount path {} is not absolute", m.mount_path);
        let v = spec.volumes.iter().flatten().find(|v| v.name == m.name);
        let v = v.unwrap_or_else(|| panic!("{pod}: volumeMount {} names no volume", m.name));
        let (data, items, kind, name) = if let Some(cm) = &v.config_map {
            let found = cluster.config_maps.get(&cm.name);
            let data = found.map(|cm| {
                cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect()
            });
            (data, cm.items.clone(), "ConfigMap", cm.name.clone())
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            (cluster.secrets.get(&name).map(secret_data), s.items.clone(), "Secret", name)
        } else {
            panic!("{pod}: volume {}: a volume kind this test does not know: extend it", v.name);
        };
        let data: BTreeMap<String, Vec<u8>> = data.unwrap_or_else(|| {
            panic!("{pod}: volume {} refers to {kind} {name}, which does not exist", v.name)
        });
        let files = match items {
            None => data.into_iter().collect(),
            Some(items) => items
                .iter()
                .map(|i| {
                    let value = data
                        .get(&i.key)
                        .unwrap_or_else(|| panic!("{pod}: {kind} {name} has no key {}", i.key));
                    (i.path.clone(), value.clone())
                })
                .collect(),
        };
        mounts.push((m.mount_path.clone(), files));
    }
    mounts
}

/// The shell that prepares the pod's filesystem in its mount namespace, then execs the binary.
pub fn setup_script(
    cluster: &Cluster,
    dir: &Path,
    pod: &str,
    mounts: &[Mount],
    env: &[(String, String)],
    working_dir: Option<&str>,
) -> String {
    let mut mounts = mounts.to_vec();
    // Parents first: a Secret mounted inside the config directory lands in it.
    mounts.sort_by_key(|(path, _)| path.len());
    // Overlays over the deepest existing directory of every mount path (and /etc for the hosts
    // file), so they can be created there without touching the host; /var/run resolves to /run.
    let mut lower: Vec<PathBuf> = vec![PathBuf::from("/etc")];
    for (path, _) in &mounts {
        let mut p = Path::new(path);
        while !p.is_dir() {
            p = p.parent().unwrap();
        }
        lower.push(std::fs::canonicalize(p).unwrap());
    }
    lower.sort();
    lower.dedup();
    let mut script = String::from("set -eu\n");
    for (i, l) in lower.iter().enumerate() {
        let (upper, work) = (dir.join(format!("overlay/{i}/upper")), dir.join(format!("overlay/{i}/work")));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let options =
            format!("lowerdir={},upperdir={},workdir={}", l.display(), upper.display(), work.display());
        script +=
            &format!("mount -t overlay overlay -o {} {}\n", quote(&options), quote(&l.display().to_string()));
    }
    script += &format!("hostname {}\n", quote(pod));
    for (i, (path, files)) in mounts.iter().enumerate() {
        let stage = dir.join(format!("volume/{i}"));
        for (file, contents) in files {
            let target = stage.join(file);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, contents).unwrap();
        }
        std::fs::create_dir_all(&stage).unwrap();
        // A volume of its own replaces what the image has at its path, as in a pod.
        let (path, stage) = (quote(path), quote(&stage.display().to_string()));
        script +=
            &format!("mkdir -p {path}\nmount -t tmpfs -o mode=0755 tmpfs {path}\ncp -R {stage}/. {path}/\n");
    }
    // ConfigMap, Secret and token volumes are always read-only in a pod.
    for (path, _) in &mounts {
        script += &format!("mount -o remount,ro {}\n", quote(path));
    }
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, hosts_file(cluster, pod)).unwrap();
    script += &format!("cp {} /etc/hosts\n", quote(&hosts.display().to_string()));
    if let Some(wd) = working_dir {
        script += &format!("mkdir -p {0}\ncd {0}\n", quote(wd));
    }
    // The environment through `env -i`, not the shell's: sh drops variables whose names are no
    // shell identifiers (`GOIM_KAFKA__PROPERTIES__SASL.PASSWORD`), which the kubelet passes on.
    let env: Vec<String> = env.iter().map(|(k, v)| quote(&format!("{k}={v}"))).collect();
    script + &format!("exec env -i {} \"$0\" \"$@\"\n", env.join(" "))
}

/// The host's hosts file, the pod's own name, and every Service's DNS names (cluster DNS): all
/// at the pod IP, where the one pod of every tier runs.
pub fn hosts_file(cluster: &Cluster, pod: &str) -> String {
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap();
    let (ip, ns) = (cluster.pod_ip, &cluster.ns);
    text += &format!("\n# operator_pods: the pod and the Services of {ns}\n{ip}\t{pod}\n");
    for s in &cluster.services {
        let s = s.name_any();
        text += &format!("{ip}\t{s}.{ns}.svc.cluster.local {s}.{ns}.svc {s}.{ns} {s}\n");
    }
    text
}

pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
