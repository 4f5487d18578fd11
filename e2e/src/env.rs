//! A container's environment as a kubelet builds it: a base (PATH, HOSTNAME, the API server's
//! address), then `envFrom`, then `env` with `$(VAR)` references to what came before expanded.

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use crate::source::{self, Sources};

pub type Vars = Vec<(String, String)>;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Addresses the environment's downward-API references need.
pub struct Addresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    /// KUBERNETES_SERVICE_HOST and _PORT.
    pub kubernetes_service: Option<(String, u16)>,
}

pub async fn resolve(
    sources: &Sources,
    pod: &Pod,
    c: &Container,
    a: &Addresses<'_>,
) -> Result<Vars, source::Error> {
    let mut vars: Vars = vec![("PATH".into(), PATH.into()), ("HOSTNAME".into(), pod.name_any())];
    if let Some((host, port)) = &a.kubernetes_service {
        let (host, port) = (host.clone(), port.to_string());
        set(&mut vars, "KUBERNETES_SERVICE_HOST", host.clone());
        set(&mut vars, "KUBERNETES_SERVICE_PORT", port.clone());
        set(&mut vars, "KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            sources.config_map(&r.name, r.optional.unwrap_or(false)).await?
        } else if let Some(r) = &from.secret_ref {
            sources.secret(&r.name, r.optional.unwrap_or(false)).await?
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            set(&mut vars, &format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(source::field(pod, &f.field_path, a.pod_ip, a.host_ip)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    let v = sources.key("ConfigMap", &r.name, &r.key, r.optional.unwrap_or(false)).await?;
                    v.map(|v| String::from_utf8_lossy(&v).into_owned())
                } else if let Some(r) = &from.secret_key_ref {
                    let v = sources.key("Secret", &r.name, &r.key, r.optional.unwrap_or(false)).await?;
                    v.map(|v| String::from_utf8_lossy(&v).into_owned())
                } else {
                    return Err(source::Error::Unsupported(format!("env {}: resourceFieldRef", e.name)));
                }
            }
            (Some(v), None) => Some(expand(v, &vars)),
            (None, None) => Some(String::new()),
        };
        // An optional reference that resolves to nothing leaves the variable unset.
        if let Some(v) = value {
            set(&mut vars, &e.name, v);
        }
    }
    Ok(vars)
}

fn set(vars: &mut Vars, name: &str, value: String) {
    match vars.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name.to_owned(), value)),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference stays
/// as written, and `$$` is a literal `$`.
pub fn expand(s: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = rest.strip_prefix("$(").and_then(|r| r.find(')')) {
            let name = &rest[2..2 + close];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[..close + 3]),
            }
            rest = &rest[close + 3..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_replaces_defined_references_and_keeps_the_rest() {
        let vars = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$(C) $$(A) $ $(", &vars), "$(C) $(A) $ $(");
        assert_eq!(expand("plain", &vars), "plain");
    }
}
