//! The Resource Manager stand-in: as strict as Resource Manager about the token, the
//! api-version and the permission, and its site answer in the shape of the `Microsoft.Web`
//! 2024-04-01 `GetWebApp` example (`tests/fixtures/resource-manager`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use keyturn_standins::{Audience, ClientCerts, Permissions, Standins};
use serde_json::Value;

use crate::{json, start, token};

const API_VERSION: &str = "api-version=2024-04-01";

/// Present in the stand-in's answer and in `Microsoft.Web`'s site schema
/// (`SiteProperties.clientCertExclusionPaths`, "client certificate authentication
/// comma-separated exclusion paths"), absent from the example only because its site sets
/// none.
const SCHEMA_ONLY_PROPERTIES: [&str; 1] = ["clientCertExclusionPaths"];

fn get_web_app_example() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/resource-manager/web-2024-04-01-GetWebApp.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the fixture is JSON")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

async fn get(standins: &Standins, path_and_query: &str, bearer: Option<&str>) -> reqwest::Response {
    let url = standins
        .resource_manager()
        .url()
        .join(path_and_query.trim_start_matches('/'))
        .expect("a valid URL");
    let mut request = standins.http_client().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the stand-in answers")
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = json(response).await;
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_site_answer_has_the_example_shape_and_the_seeded_client_certificate_settings() {
    let standins = start().await;
    let site = standins
        .resource_manager()
        .seed_site("kt-endpoint", ClientCerts::required().excluding("/health"));
    let token = token(&standins, Audience::ResourceManager).await;
    let response = get(
        &standins,
        &format!("{}?{API_VERSION}", site.resource_id()),
        Some(&token),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;

    let example = get_web_app_example();
    assert_eq!(example["parameters"]["api-version"], "2024-04-01");
    let example = &example["responses"]["200"]["body"];
    assert_eq!(keys(&body), keys(example));
    let extra: Vec<String> = keys(&body["properties"])
        .difference(&keys(&example["properties"]))
        .filter(|k| !SCHEMA_ONLY_PROPERTIES.contains(&k.as_str()))
        .cloned()
        .collect();
    assert!(extra.is_empty(), "properties the example lacks: {extra:?}");
    for name in ["clientCertEnabled", "clientCertMode", "httpsOnly"] {
        assert_eq!(
            std::mem::discriminant(&body["properties"][name]),
            std::mem::discriminant(&example["properties"][name]),
            "{name} has the example's type"
        );
    }
    assert_eq!(body["id"], site.resource_id());
    assert_eq!(body["type"], example["type"]);
    assert_eq!(body["properties"]["clientCertEnabled"], true);
    assert_eq!(body["properties"]["clientCertMode"], "Required");
    assert_eq!(body["properties"]["clientCertExclusionPaths"], "/health");
}

#[tokio::test]
async fn a_read_without_the_right_token_is_refused_as_resource_manager_refuses_it() {
    let standins = start().await;
    let site = standins
        .resource_manager()
        .seed_site("kt-endpoint", ClientCerts::required());
    let path = format!("{}?{API_VERSION}", site.resource_id());
    let graph = token(&standins, Audience::Graph).await;
    let cases = [
        (None, 401, "AuthenticationFailed"),
        (Some("not-a-token"), 401, "InvalidAuthenticationToken"),
        (
            Some(graph.as_str()),
            401,
            "InvalidAuthenticationTokenAudience",
        ),
    ];
    for (bearer, status, code) in cases {
        let response = get(&standins, &path, bearer).await;
        assert!(response.headers().contains_key("www-authenticate"));
        assert_eq!(error_code(response).await, (status, code.to_owned()));
    }
}

#[tokio::test]
async fn the_api_version_the_path_and_the_permission_are_checked() {
    let standins = start().await;
    let rm = standins.resource_manager();
    let site = rm.seed_site("kt-endpoint", ClientCerts::required());
    let token = token(&standins, Audience::ResourceManager).await;
    let id = site.resource_id();
    let group = format!(
        "/subscriptions/{}/resourceGroups/rg-other/providers/Microsoft.Web/sites/kt-endpoint",
        site.subscription
    );
    let cases = [
        (id.clone(), 400, "MissingApiVersionParameter"),
        (
            format!("{id}?api-version=2015-01-01"),
            400,
            "NoRegisteredProviderFound",
        ),
        (
            format!("{id}/config/web?{API_VERSION}"),
            400,
            "InvalidResourceType",
        ),
        (
            format!("{}?{API_VERSION}", id.replace("kt-endpoint", "kt-other")),
            404,
            "ResourceNotFound",
        ),
        (
            format!("{group}?{API_VERSION}"),
            404,
            "ResourceGroupNotFound",
        ),
    ];
    for (path, status, code) in cases {
        let response = get(&standins, &path, Some(&token)).await;
        assert_eq!(
            error_code(response).await,
            (status, code.to_owned()),
            "{path}"
        );
    }

    // Case differs, as Resource Manager ids may: the same site.
    let upper = format!(
        "{}?{API_VERSION}",
        id.to_ascii_uppercase()
            .replace("MICROSOFT.WEB", "Microsoft.Web")
    );
    assert_eq!(get(&standins, &upper, Some(&token)).await.status(), 200);

    // An identity without Microsoft.Web/sites/read.
    let other = standins.issue_token(
        Audience::ResourceManager,
        Permissions::only(["secrets/get"]),
    );
    let response = get(&standins, &format!("{id}?{API_VERSION}"), Some(&other)).await;
    assert_eq!(
        error_code(response).await,
        (403, "AuthorizationFailed".to_owned())
    );

    // A change to the site is what the next read sees.
    rm.set_client_certs(&site, ClientCerts::mode("OptionalInteractiveUser"));
    let body = json(get(&standins, &format!("{id}?{API_VERSION}"), Some(&token)).await).await;
    assert_eq!(
        body["properties"]["clientCertMode"],
        "OptionalInteractiveUser"
    );
    assert!(body["properties"].get("clientCertExclusionPaths").is_none());
}
