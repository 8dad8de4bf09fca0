//! The OpenRPC 1.3 document, generated from [`crate::METHODS`] and the serde
//! types, so that the document cannot drift from the code that parses and
//! returns the values it describes.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::errors::{ErrorCode, INVALID_PARAMS};
use crate::fields::ConfigureParams;
use crate::types::*;
use crate::{method, METHODS, PROTOCOL, VERSION};

/// Builds the complete document. Cheap enough to build once at startup and
/// serve from memory.
pub fn document() -> Value {
    let methods: Vec<Value> = METHODS.iter().map(method_entry).collect();
    let errors: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| error_entry(*c))
        .chain(std::iter::once(json!({
            "code": INVALID_PARAMS,
            "message": "Invalid params",
            "data": {"kind": "invalid_params", "hint": "fix the named field as the message says", "retryable": false},
        })))
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "hero_livekit",
            "description": "Supervisor of a LiveKit deployment: keeps livekit.yaml, backend.env and runtime.json consistent and supervises livekit-server and lk-backend.",
            "version": VERSION,
            "x-protocol": PROTOCOL,
        },
        "servers": [{"name": "rpc.sock", "url": "unix:///<root>/var/sockets/hero_livekit_server/rpc.sock"}],
        "methods": methods,
        "components": {
            "errors": errors_map(&errors),
            "schemas": {
                "ErrorData": schema::<crate::ErrorData>(),
                "Health": schema::<Health>(),
                "EventMessage": schema::<EventMessage>(),
            },
            "x-error-table": errors,
        }
    })
}

fn errors_map(errors: &[Value]) -> Value {
    let mut m = Map::new();
    for e in errors {
        let kind = e["data"]["kind"].as_str().unwrap_or("unknown").to_string();
        m.insert(kind, e.clone());
    }
    Value::Object(m)
}

fn error_entry(c: ErrorCode) -> Value {
    json!({
        "code": c.code(),
        "message": c.title(),
        "data": {"kind": c.kind(), "hint": c.default_hint(), "retryable": c.retryable()},
    })
}

fn schema<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft07();
    // Inline everything so each parameter descriptor is self-contained.
    settings.inline_subschemas = true;
    let generator = settings.into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("$schema");
    }
    v
}

/// Splits an object schema into one OpenRPC content descriptor per property.
fn params_of<T: JsonSchema>() -> Vec<Value> {
    let s = schema::<T>();
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = s["properties"].as_object() else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            json!({
                "name": name,
                "description": prop.get("description").cloned().unwrap_or(Value::Null),
                "required": required.contains(&name.as_str()),
                "schema": prop,
            })
        })
        .collect()
}

fn method_entry(spec: &crate::MethodSpec) -> Value {
    let (params, result_name, result) = match spec.name {
        method::INSTALL => (params_of::<InstallParams>(), "InstallResult", schema::<InstallResult>()),
        method::CONFIGURE => (
            params_of::<ConfigureParams>(),
            "ConfigureResult",
            schema::<ConfigureResult>(),
        ),
        method::START => (params_of::<StartParams>(), "StartResult", schema::<StartResult>()),
        method::STOP => (params_of::<StopParams>(), "StopResult", schema::<StopResult>()),
        method::RESTART => (params_of::<RestartParams>(), "RestartResult", schema::<RestartResult>()),
        method::HEALTH => (Vec::new(), "Health", schema::<Health>()),
        method::LOGS => (params_of::<LogsParams>(), "LogsResult", schema::<LogsResult>()),
        method::CONFIG_SHOW => (Vec::new(), "ConfigShowResult", schema::<ConfigShowResult>()),
        method::SUBSCRIBE_EVENTS => (Vec::new(), "EventMessage", schema::<EventMessage>()),
        method::CLUSTER_TOKEN => (Vec::new(), "ClusterTokenResult", schema::<ClusterTokenResult>()),
        method::CLUSTER_STATUS => (Vec::new(), "ClusterHealth", schema::<ClusterHealth>()),
        method::BACKEND_TOKEN => (Vec::new(), "BackendTokenResult", schema::<BackendTokenResult>()),
        method::CLUSTER_LEAVE => (Vec::new(), "ClusterLeave", schema::<ClusterLeave>()),
        method::DISCOVER => (
            Vec::new(),
            "OpenRPC",
            json!({"type": "object", "description": "This document."}),
        ),
        other => (
            Vec::new(),
            "unknown",
            json!({"description": format!("undocumented method {other}")}),
        ),
    };
    let mut errors: Vec<Value> = spec.errors.iter().map(|c| error_entry(*c)).collect();
    if !params.is_empty() {
        errors.push(json!({"code": INVALID_PARAMS, "message": "Invalid params"}));
    }
    let mut entry = json!({
        "name": spec.name,
        "summary": spec.summary,
        "paramStructure": "by-name",
        "params": params,
        "result": {"name": result_name, "schema": result},
        "errors": errors,
        "x-access": match spec.access { crate::Access::ReadOnly => "read-only", crate::Access::Mutating => "mutating" },
    });
    if spec.subscription {
        entry["x-subscription"] = json!({
            "notification": method::EVENT_NOTIFICATION,
            "unsubscribe": method::UNSUBSCRIBE_EVENTS,
            "transport": "websocket",
        });
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_method_once_with_schemas() {
        let doc = document();
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .expect("methods array")
            .iter()
            .map(|m| m["name"].as_str().expect("name"))
            .collect();
        let expected: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        assert_eq!(names, expected);
        for m in doc["methods"].as_array().expect("methods") {
            assert!(m["result"]["schema"].is_object(), "{} has a result schema", m["name"]);
            assert_ne!(m["result"]["name"], "unknown", "{} is documented", m["name"]);
        }
    }

    #[test]
    fn configure_params_are_described_by_name() {
        let doc = document();
        let configure = doc["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .find(|m| m["name"] == method::CONFIGURE)
            .expect("configure");
        let params: Vec<&str> = configure["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        let mut table: Vec<&str> = crate::fields::CONFIGURE_FIELDS.iter().map(|f| f.name).collect();
        table.sort_unstable();
        assert_eq!(params, table, "the document lists exactly the table's fields, by name");
        for p in configure["params"].as_array().expect("params") {
            assert!(p["description"].is_string(), "{} has a description", p["name"]);
        }
    }

    #[test]
    fn error_codes_are_unique_and_in_the_application_range() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!((-32099..=-32000).contains(&c.code()), "{c:?}");
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(ErrorCode::from_code(c.code()), Some(*c));
        }
    }
}
