//! Every manifest of the kind suite (e2e/kind/*.yaml), every example PushCluster
//! (examples/*.yaml) and the chart rendered with the kind values, created on the real API
//! server of scripts/k8s.sh as a server-side dry run with strict field validation: the
//! server's own schemas (and the PushCluster CRD's) judge each object, and an unknown field is
//! an error, not a warning. Namespace documents are created for real, so the objects in them
//! can be dry-run. A deliberately broken document must be refused, so the check can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::core::{DynamicObject, GroupVersionKind, Request};
use kube::discovery::{self, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

/// Where namespaced objects without a namespace (the chart's, the examples') are dry-run.
const DEFAULT_NAMESPACE: &str = "goim-e2e-manifests";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The documents of one multi-document YAML text, empty ones skipped.
fn documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
    }))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create namespace {name}")),
    }
}

/// A server-side dry-run create of one document, with `fieldValidation=Strict`.
async fn dry_run(client: &Client, doc: &serde_json::Value) -> Result<()> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).context("not a Kubernetes object")?;
    let types = obj.types.clone().context("no apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the server does not serve {}/{}", types.api_version, types.kind))?;
    let url = match caps.scope {
        Scope::Namespaced => {
            let ns = obj.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
            ensure_namespace(client, &ns).await?;
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource).resource_url().to_owned()
        }
        Scope::Cluster => Api::<DynamicObject>::all_with(client.clone(), &resource).resource_url().to_owned(),
    };
    let params = PostParams { dry_run: true, ..PostParams::default() };
    let mut request = Request::new(url).create(&params, serde_json::to_vec(doc)?)?;
    // kube's PostParams has no field validation: Strict makes an unknown or duplicated field
    // an error (the default, Warn, only logs it).
    let uri = format!("{}&fieldValidation=Strict", request.uri());
    *request.uri_mut() = uri.parse()?;
    client.request::<DynamicObject>(request).await?;
    Ok(())
}

/// Dry-runs every document of `text`; Namespace documents are created for real first.
async fn check(client: &Client, origin: &str, text: &str) -> Result<usize> {
    let docs = documents(text).with_context(|| format!("{origin}: not YAML"))?;
    for doc in docs.iter().filter(|d| d["kind"] == "Namespace" && d["apiVersion"] == "v1") {
        let name = doc["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{origin}: a Namespace without a name"))?;
        ensure_namespace(client, name).await?;
    }
    for doc in docs.iter().filter(|d| d["kind"] != "Namespace") {
        let named = format!(
            "{origin}: {} {}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        dry_run(client, doc).await.with_context(|| format!("{named} refused"))?;
    }
    Ok(docs.len())
}

async fn client() -> Client {
    Client::try_default().await.expect("a kubeconfig (KUBECONFIG from scripts/k8s.sh env)")
}

/// The PushCluster CRD, installed (for real) from crds/ if the server lacks it.
async fn install_crd(client: &Client) -> Result<()> {
    let text = std::fs::read_to_string(root().join("crds/pushcluster.yaml"))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // Served once Established; discovery then knows the kind.
    for _ in 0..100 {
        let crd = api.get(&crd.name_any()).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the PushCluster CRD never became Established")
}

#[tokio::test]
#[ignore = "needs control plane"]
async fn kind_manifests_and_examples_pass_the_servers_schemas() -> Result<()> {
    let client = client().await;
    install_crd(&client).await?;
    let mut files = yaml_files(&root().join("e2e/kind"))?;
    // cluster.yaml is kind's config, not a Kubernetes object (e2e/kind/validate checks it);
    // values.yaml is the chart's values (rendered below).
    files.retain(|p| !p.ends_with("cluster.yaml") && !p.ends_with("values.yaml"));
    files.extend(yaml_files(&root().join("examples"))?);
    assert!(files.len() >= 3, "expected the kind manifests and the examples, found {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let n = check(&client, &file.display().to_string(), &text).await?;
        assert!(n > 0, "{}: no documents", file.display());
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs control plane"]
async fn the_chart_rendered_with_the_kind_values_passes_the_servers_schemas() -> Result<()> {
    let client = client().await;
    install_crd(&client).await?;
    let bin =
        std::env::var("GOIM_K8S_BIN").context("GOIM_K8S_BIN (scripts/k8s.sh env) names the helm binary")?;
    let root = root();
    let out = Command::new(Path::new(&bin).join("helm"))
        .args([
            "template",
            "goim-operator",
            "charts/goim-rs-operator",
            "--namespace",
            DEFAULT_NAMESPACE,
            "-f",
            "e2e/kind/values.yaml",
        ])
        .current_dir(&root)
        .output()
        .context("run helm template")?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let n = check(&client, "helm template (e2e/kind/values.yaml)", &String::from_utf8(out.stdout)?).await?;
    assert!(n >= 3, "the chart rendered only {n} objects");
    Ok(())
}

#[tokio::test]
#[ignore = "needs control plane"]
async fn a_broken_document_is_refused() -> Result<()> {
    let client = client().await;
    install_crd(&client).await?;
    // An unknown field (strict validation), a wrong type (the schema), and a PushCluster
    // field the CRD does not have.
    let broken = [
        (
            "replicaz",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec:\n  replicaz: 1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: x}]}\n",
        ),
        (
            "port",
            "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec: {ports: [{port: not-a-number}]}\n",
        ),
        (
            "cometz",
            "apiVersion: goim-rs.io/v1alpha1\nkind: PushCluster\nmetadata: {name: broken}\nspec: {cometz: 1}\n",
        ),
    ];
    for (field, doc) in broken {
        match check(&client, "broken", doc).await {
            Ok(_) => panic!("the server accepted a broken document:\n{doc}"),
            // Refused for the broken field, not for some other reason.
            Err(e) => assert!(format!("{e:#}").contains(field), "refused, but not for {field}: {e:#}"),
        }
    }
    Ok(())
}
