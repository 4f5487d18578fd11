//! ServiceAccounts and the least-privilege Role of logic and job: read the EndpointSlices of
//! the comet headless Service (discovery). comet gets an account with no permissions.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Owner;

pub fn service_accounts(owner: &Owner) -> Vec<ServiceAccount> {
    vec![
        ServiceAccount { metadata: owner.meta(owner.names.discovery_account(), None), ..Default::default() },
        ServiceAccount { metadata: owner.meta(owner.names.comet_account(), None), ..Default::default() },
    ]
}

pub fn role(owner: &Owner) -> Role {
    Role {
        metadata: owner.meta(owner.names.discovery_account(), None),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    }
}

pub fn role_binding(owner: &Owner) -> RoleBinding {
    RoleBinding {
        metadata: owner.meta(owner.names.discovery_account(), None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: owner.names.discovery_account(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: owner.names.discovery_account(),
            namespace: Some(owner.namespace.clone()),
            ..Default::default()
        }]),
    }
}
