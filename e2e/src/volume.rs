//! A pod's volumes written as files under its directory (`<pod dir>/volumes/<name>`), and each
//! container's mounts: where a volume (or a subPath of it) appears in the container's private
//! mount namespace.
//!
//! The files are written once, when the pod starts: a changed ConfigMap or Secret does not reach a
//! running pod, and projected tokens are not refreshed (they last an hour).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::source::{self, Data, Error, Sources};

/// A bind mount of `source` (a host path) at `target` (a path inside the container).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Writes every volume of the pod under `dir`; returns each volume's host path by name.
pub async fn write_all(
    sources: &Sources,
    pod: &Pod,
    dir: &Path,
    pod_ip: &str,
    host_ip: &str,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut paths = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = match &v.host_path {
            Some(h) => PathBuf::from(&h.path),
            None => {
                let path = dir.join("volumes").join(&v.name);
                std::fs::create_dir_all(&path)?;
                write(sources, pod, v, &path, pod_ip, host_ip).await?;
                path
            }
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

async fn write(
    sources: &Sources,
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    pod_ip: &str,
    host_ip: &str,
) -> Result<(), Error> {
    if let Some(c) = &v.config_map {
        let data = sources.config_map(&c.name, c.optional.unwrap_or(false)).await?;
        return files(dir, data, c.items.as_deref(), c.default_mode);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = sources.secret(&name, s.optional.unwrap_or(false)).await?;
        return files(dir, data, s.items.as_deref(), s.default_mode);
    }
    if let Some(d) = &v.downward_api {
        return downward(dir, pod, d.items.as_deref().unwrap_or_default(), d.default_mode, pod_ip, host_ip);
    }
    if let Some(p) = &v.projected {
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                let data = sources.config_map(&c.name, c.optional.unwrap_or(false)).await?;
                files(dir, data, c.items.as_deref(), p.default_mode)?;
            } else if let Some(c) = &s.secret {
                let data = sources.secret(&c.name, c.optional.unwrap_or(false)).await?;
                files(dir, data, c.items.as_deref(), p.default_mode)?;
            } else if let Some(d) = &s.downward_api {
                downward(dir, pod, d.items.as_deref().unwrap_or_default(), p.default_mode, pod_ip, host_ip)?;
            } else if let Some(t) = &s.service_account_token {
                let token = sources.token(pod, t.audience.as_deref(), t.expiration_seconds).await?;
                file(dir, &t.path, token.as_bytes(), p.default_mode.unwrap_or(0o644))?;
            } else {
                return Err(Error::Unsupported(format!("volume {}: a projected source", v.name)));
            }
        }
        return Ok(());
    }
    if v.empty_dir.is_some() {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "volume {}: only configMap, secret, downwardAPI, projected, emptyDir, hostPath",
        v.name
    )))
}

/// A ConfigMap's or Secret's keys as files: all of them, or the `items` chosen (a missing key
/// is an error unless the whole source was optional and absent).
fn files(
    dir: &Path,
    data: Option<Data>,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<(), Error> {
    let Some(data) = data else { return Ok(()) };
    let mode = mode.unwrap_or(0o644);
    match items {
        None => data.iter().try_for_each(|(k, v)| file(dir, k, v, mode)),
        Some(items) => items.iter().try_for_each(|i| {
            let v = data.get(&i.key).ok_or_else(|| Error::MissingKey {
                kind: "source",
                name: dir.display().to_string(),
                key: i.key.clone(),
            })?;
            file(dir, &i.path, v, i.mode.unwrap_or(mode))
        }),
    }
}

fn downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: Option<i32>,
    pod_ip: &str,
    host_ip: &str,
) -> Result<(), Error> {
    for i in items {
        let Some(f) = &i.field_ref else {
            return Err(Error::Unsupported(format!("downwardAPI {}: resourceFieldRef", i.path)));
        };
        let value = source::field(pod, &f.field_path, pod_ip, host_ip)?;
        file(dir, &i.path, value.as_bytes(), i.mode.or(mode).unwrap_or(0o644))?;
    }
    Ok(())
}

/// Writes `rel` (a relative path without `..`) under `dir`.
fn file(dir: &Path, rel: &str, data: &[u8], mode: i32) -> Result<(), Error> {
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::Unsupported(format!("the volume path {}", rel.display())));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, data)?;
    // Only permission bits; the API validates the mode's range.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32 & 0o777))?;
    Ok(())
}

/// The container's mounts, parents before children, with every mount point made to exist:
/// inside the volume of an enclosing mount, or else on the host (an empty directory or file that
/// stays, since a container sees the host's filesystem outside its mounts).
pub fn mounts(c: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Mount>, Error> {
    let mut out: Vec<Mount> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| Error::Unsupported(format!("mount of unknown volume {}", m.name)))?;
        let source = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => base.join(sub),
            _ => base.clone(),
        };
        out.push(Mount {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    out.sort_by_key(|m| m.target.components().count());
    for (i, m) in out.iter().enumerate() {
        let parent = out[..i].iter().rev().find(|p| m.target.starts_with(&p.target));
        let point = match parent {
            Some(p) => p.source.join(m.target.strip_prefix(&p.target).unwrap_or(Path::new(""))),
            None => m.target.clone(),
        };
        if point.exists() {
            continue;
        }
        if m.source.is_dir() {
            std::fs::create_dir_all(&point)?;
        } else {
            if let Some(dir) = point.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(&point)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn nested_mount_points_are_made_inside_the_enclosing_volume() {
        let tmp = std::env::temp_dir().join(format!("goim-e2e-volume-{}", std::process::id()));
        let (outer, inner) = (tmp.join("config"), tmp.join("tls"));
        std::fs::create_dir_all(&outer).unwrap();
        std::fs::create_dir_all(&inner).unwrap();
        let volumes =
            BTreeMap::from([("config".to_owned(), outer.clone()), ("tls".to_owned(), inner.clone())]);
        let mount = |name: &str, path: &str| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        };
        let c = Container {
            volume_mounts: Some(vec![
                mount("tls", &tmp.join("etc/tls").display().to_string()),
                mount("config", &tmp.join("etc").display().to_string()),
            ]),
            ..Default::default()
        };
        let m = mounts(&c, &volumes).unwrap();
        assert_eq!(m[0].source, outer, "the parent first");
        assert!(outer.join("tls").is_dir(), "the child's mount point is in the parent's volume");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
