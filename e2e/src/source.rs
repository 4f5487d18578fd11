//! What a pod's env and volumes read from the API: ConfigMaps, Secrets, ServiceAccount tokens,
//! and the pod's own fields (the downward API).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {name} not found")]
    Missing { kind: &'static str, name: String },
    #[error("{kind} {name} has no key {key}")]
    MissingKey { kind: &'static str, name: String, key: String },
    #[error("unsupported field path {0}")]
    FieldPath(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    #[error("writing a volume: {0}")]
    Io(#[from] std::io::Error),
}

/// Lookups in one pod's namespace.
pub struct Sources {
    client: Client,
    namespace: String,
}

pub type Data = BTreeMap<String, Vec<u8>>;

impl Sources {
    pub fn new(client: Client, pod: &Pod) -> Sources {
        Sources { client, namespace: pod.namespace().unwrap_or_else(|| "default".into()) }
    }

    /// A ConfigMap's data and binaryData; `None` when it is missing and `optional`.
    pub async fn config_map(&self, name: &str, optional: bool) -> Result<Option<Data>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(cm) = api.get_opt(name).await? else {
            return missing("ConfigMap", name, optional);
        };
        let mut data: Data =
            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        Ok(Some(data))
    }

    pub async fn secret(&self, name: &str, optional: bool) -> Result<Option<Data>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(s) = api.get_opt(name).await? else {
            return missing("Secret", name, optional);
        };
        let mut data: Data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        data.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        Ok(Some(data))
    }

    /// One key; `None` when the object or the key is missing and `optional`.
    pub async fn key(
        &self,
        kind: &'static str,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<Vec<u8>>, Error> {
        let data = match kind {
            "Secret" => self.secret(name, optional).await?,
            _ => self.config_map(name, optional).await?,
        };
        match data.map(|mut d| d.remove(key)) {
            Some(Some(v)) => Ok(Some(v)),
            None | Some(None) if optional => Ok(None),
            _ => Err(Error::MissingKey { kind, name: name.to_owned(), key: key.to_owned() }),
        }
    }

    /// A token of the pod's ServiceAccount bound to the pod, as a kubelet projects one.
    pub async fn token(
        &self,
        pod: &Pod,
        audience: Option<&str>,
        seconds: Option<i64>,
    ) -> Result<String, Error> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                // None: the API server's own audience.
                audiences: audience.map(|a| vec![a.to_owned()]),
                expiration_seconds: Some(seconds.unwrap_or(3600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let reply = api.create_token_request(&account, &PostParams::default(), &request).await?;
        Ok(reply.status.and_then(|s| s.token).unwrap_or_default())
    }
}

fn missing<T>(kind: &'static str, name: &str, optional: bool) -> Result<Option<T>, Error> {
    if optional { Ok(None) } else { Err(Error::Missing { kind, name: name.to_owned() }) }
}

/// A downward-API field of the pod (`metadata.name`, `metadata.labels['app']`, `status.podIP`...).
/// The pod's IP fields come from `pod_ip`, which the pod's status may not carry yet.
pub fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, Error> {
    let spec = pod.spec.as_ref();
    let indexed = |prefix: &str, map: &BTreeMap<String, String>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    let lines =
        |map: &BTreeMap<String, String>| map.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect::<String>();
    let value = match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => lines(pod.labels()),
        "metadata.annotations" => lines(pod.annotations()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        _ => indexed("metadata.labels['", pod.labels())
            .or_else(|| indexed("metadata.annotations['", pod.annotations()))
            .ok_or_else(|| Error::FieldPath(path.to_owned()))?,
    };
    Ok(value)
}
