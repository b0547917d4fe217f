//! Secrets and configs: their documents and the specs Docker's clients create them with.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::shape::payload::{
    config_json, config_spec_from_json, secret_json, secret_spec_from_json,
};

fn annotations() -> Option<api::Annotations> {
    Some(api::Annotations {
        name: "db-password".into(),
        labels: HashMap::from([("tier".into(), "db".into())]),
        ..Default::default()
    })
}

fn meta() -> Option<api::Meta> {
    Some(api::Meta {
        version: Some(api::Version { index: 7 }),
        created_at: Some(ts(1_700_000_000)),
        updated_at: Some(ts(1_700_000_060)),
    })
}

#[test]
fn secrets_never_show_data_and_configs_do() {
    let secret = secret_json(&api::Secret {
        id: "abc123".into(),
        meta: meta(),
        spec: Some(api::SecretSpec {
            annotations: annotations(),
            data: b"hunter2".to_vec(),
            ..Default::default()
        }),
        internal: false,
    });
    assert_eq!(secret["Spec"]["Name"], "db-password");
    assert_eq!(secret["Version"]["Index"], 7);
    assert_eq!(secret["CreatedAt"], "2023-11-14T22:13:20Z");
    assert!(secret["Spec"].get("Data").is_none());
    let config = config_json(&api::Config {
        id: "abc123".into(),
        meta: meta(),
        spec: Some(api::ConfigSpec {
            annotations: annotations(),
            data: b"port=80".to_vec(),
            templating: None,
        }),
    });
    assert_eq!(config["Spec"]["Data"], "cG9ydD04MA==");
    assert_eq!(config["Spec"]["Labels"], json!({"tier": "db"}));
}

#[test]
fn specs_read_their_data_as_standard_base64() {
    let body = json!({
        "Name": "db-password",
        "Labels": {"tier": "db"},
        "Data": "aHVudGVyMg==",
        "Templating": {"Name": "golang"},
    });
    assert_eq!(
        secret_spec_from_json(&body),
        Ok(api::SecretSpec {
            annotations: annotations(),
            data: b"hunter2".to_vec(),
            templating: Some(api::Driver {
                name: "golang".into(),
                options: HashMap::new(),
            }),
            driver: None,
        })
    );
    let config = config_spec_from_json(&body).unwrap();
    assert_eq!(config.data, b"hunter2");
    // A config read back from its document is the config.
    let stored = api::Config {
        spec: Some(config.clone()),
        ..Default::default()
    };
    assert_eq!(
        config_spec_from_json(&config_json(&stored)["Spec"]),
        Ok(config)
    );
    assert!(
        refusal(secret_spec_from_json(
            &json!({"Name": "x", "Data": "not base64!"})
        ))
        .starts_with("SecretSpec.Data: not standard base64: ")
    );
    assert_eq!(
        refusal(config_spec_from_json(&json!({"Name": "x", "Data": [1, 2]}))),
        "json: cannot unmarshal array into Go struct field ConfigSpec.Data of type []uint8"
    );
}
