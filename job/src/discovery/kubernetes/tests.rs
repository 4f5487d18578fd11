//! Start-up against a fake API server (a tower service answering the few requests discovery
//! makes): refusals become [`Error::Forbidden`] / [`Error::Unauthorized`] at once. The real API
//! server is in `job/tests/kubernetes.rs`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// How the fake API server answers.
#[derive(Clone, Default)]
struct Fake {
    /// Verbs the access reviews allow; `None`: no authorization API (404).
    allowed: Option<BTreeSet<&'static str>>,
    /// The user SelfSubjectReview names; `None`: 404.
    user: Option<&'static str>,
    /// Status code of the EndpointSlice list (200 lists one comet).
    list: u16,
    /// Status code of the access reviews, when not 201.
    review_code: Option<u16>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn respond(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

async fn answer(fake: Arc<Fake>, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap_or_default())
        .unwrap_or(Value::Null);
    let forbidden = |verb: &str| {
        status(
            403,
            "Forbidden",
            &format!(
                "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:goim:goim-job\" \
                 cannot {verb} resource \"endpointslices\" in API group \"discovery.k8s.io\" in the namespace \"goim\""
            ),
        )
    };
    Ok(match path.as_str() {
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => match (&fake.allowed, fake.review_code) {
            (_, Some(code)) => respond(code, status(code, "Unauthorized", "Unauthorized")),
            (None, None) => {
                respond(404, status(404, "NotFound", "the server could not find the requested resource"))
            }
            (Some(allowed), None) => {
                let verb = body["spec"]["resourceAttributes"]["verb"].as_str().unwrap_or_default();
                let attrs = &body["spec"]["resourceAttributes"];
                assert_eq!(attrs["group"], "discovery.k8s.io");
                assert_eq!(attrs["resource"], "endpointslices");
                assert_eq!(attrs["namespace"], "goim");
                let mut review = body.clone();
                review["status"] = json!({"allowed": allowed.contains(verb)});
                respond(201, review)
            }
        },
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => match fake.user {
            Some(user) => {
                let mut review = body.clone();
                review["status"] = json!({"userInfo": {"username": user}});
                respond(201, review)
            }
            None => respond(404, status(404, "NotFound", "not found")),
        },
        "/apis/discovery.k8s.io/v1/namespaces/goim/endpointslices" if query.contains("watch=true") => {
            // A watch that ends at once; the watcher starts another one after its backoff.
            if fake.list == 200 { respond(200, Value::Null) } else { respond(403, forbidden("watch")) }
        }
        "/apis/discovery.k8s.io/v1/namespaces/goim/endpointslices" => match fake.list {
            200 => respond(
                200,
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": "7"},
                    "items": [{
                        "metadata": {"name": "goim-comet-grpc-x1", "namespace": "goim",
                                     "labels": {"kubernetes.io/service-name": "goim-comet-grpc"}},
                        "addressType": "IPv4",
                        "ports": [{"name": "grpc", "port": 3109, "protocol": "TCP"}],
                        "endpoints": [{"addresses": ["10.244.0.5"],
                                       "conditions": {"ready": true, "serving": true, "terminating": false},
                                       "targetRef": {"kind": "Pod", "name": "goim-comet-0", "namespace": "goim"}}]
                    }]
                }),
            ),
            code => respond(code, forbidden("list")),
        },
        other => respond(404, status(404, "NotFound", &format!("fake API server: no {other}"))),
    })
}

fn client(fake: Fake) -> Client {
    let fake = Arc::new(fake);
    let service = tower::service_fn(move |req| answer(fake.clone(), req));
    Client::new(service, "goim")
}

fn config() -> KubernetesConfig {
    KubernetesConfig { sync_timeout: Duration::from_secs(10), ..KubernetesConfig::default() }
}

async fn start(fake: Fake) -> (Result<Kubernetes, Error>, Duration) {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let t0 = std::time::Instant::now();
    let result = Kubernetes::start_with_client(client(fake), &config(), shutdown.clone(), &tasks).await;
    let took = t0.elapsed();
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    (result, took)
}

fn allowed(verbs: &[&'static str]) -> Option<BTreeSet<&'static str>> {
    Some(verbs.iter().copied().collect())
}

#[tokio::test]
async fn list_and_watch_allowed_lists_the_comets() {
    let (result, _) =
        start(Fake { allowed: allowed(&["list", "watch"]), user: None, list: 200, ..Fake::default() }).await;
    let comets = result.expect("discovery starts").watch().borrow().clone();
    assert_eq!(*comets, [CometEndpoint::up("goim-comet-0", "10.244.0.5:3109")]);
}

#[tokio::test]
async fn list_without_watch_fails_at_once_naming_the_verb_and_the_service_account() {
    let fake = Fake {
        allowed: allowed(&["list"]),
        user: Some("system:serviceaccount:goim:goim-job"),
        list: 200,
        ..Fake::default()
    };
    let (result, took) = start(fake).await;
    let err = result.expect_err("watch is not allowed");
    let Error::Forbidden { verbs, resource, namespace, user_hint } = &err else { panic!("{err}") };
    assert_eq!(verbs, &["watch"]);
    assert_eq!(resource, "endpointslices.discovery.k8s.io");
    assert_eq!(namespace, "goim");
    assert_eq!(
        user_hint,
        "ServiceAccount \"goim-job\" in namespace \"goim\" (user \"system:serviceaccount:goim:goim-job\")"
    );
    assert!(took < config().sync_timeout / 2, "took {took:?}");
    assert_eq!(
        err.to_string(),
        "ServiceAccount \"goim-job\" in namespace \"goim\" (user \"system:serviceaccount:goim:goim-job\") \
         may not watch endpointslices.discovery.k8s.io in namespace \"goim\". Comet discovery needs list \
         and watch on them: grant them with a Role in namespace \"goim\" (rules: apiGroups \
         [\"discovery.k8s.io\"], resources [\"endpointslices\"], verbs [\"list\", \"watch\"]) and a \
         RoleBinding of that Role to this identity"
    );
}

#[tokio::test]
async fn no_permission_names_both_verbs_and_an_unknown_user_reads_as_this_client() {
    let (result, _) = start(Fake { allowed: allowed(&[]), user: None, list: 403, ..Fake::default() }).await;
    match result {
        Err(Error::Forbidden { verbs, user_hint, .. }) => {
            assert_eq!(verbs, ["list", "watch"]);
            assert_eq!(user_hint, "this client");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_the_authorization_api_a_403_from_the_list_is_mapped_to_forbidden_at_once() {
    let (result, took) = start(Fake { allowed: None, user: None, list: 403, ..Fake::default() }).await;
    match result {
        Err(Error::Forbidden { verbs, user_hint, namespace, .. }) => {
            assert_eq!(verbs, ["list"]);
            assert_eq!(namespace, "goim");
            assert!(user_hint.contains("ServiceAccount \"goim-job\""), "{user_hint}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < config().sync_timeout / 2, "took {took:?}");
}

#[tokio::test]
async fn rejected_credentials_are_unauthorized() {
    let (result, _) = start(Fake { allowed: None, user: None, list: 200, review_code: Some(401) }).await;
    assert!(matches!(result, Err(Error::Unauthorized(_))), "{result:?}");
}

#[test]
fn user_hints() {
    assert_eq!(user_hint(Some("alice")), "user \"alice\"");
    assert_eq!(user_hint(Some("")), "this client");
    assert_eq!(quoted_user("x is forbidden: User \"bob\" cannot list"), Some("bob"));
    assert_eq!(quoted_user("forbidden"), None);
}
