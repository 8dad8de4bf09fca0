//! The JSON-RPC method table: thin translations between the wire and
//! [`LivekitService`].
//!
//! Each handler parses its by-name params (naming the offending field on
//! failure), checks the caller's access *inside the method* (so batch
//! entries and WebSocket messages are covered the same way as single
//! calls), and maps domain errors to stable codes.

use std::sync::Arc;

use hero_livekit_proto::{method, method_spec, Access, ErrorCode};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{Extensions, RpcModule, SubscriptionMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ServiceError;
use crate::peer::Peer;
use crate::service::LivekitService;

/// Parses by-name params. Absent, `null`, `{}` and `[]` mean all defaults;
/// positional params are refused because every parameter is optional and
/// positions would be ambiguous.
///
/// # Errors
/// -32602 naming the field and what it must be.
pub fn parse_params<T: DeserializeOwned + Default>(params: &Params<'_>) -> Result<T, ServiceError> {
    let raw = params.as_str().map(str::trim).unwrap_or("");
    if raw.is_empty() || raw == "null" || raw == "[]" {
        return Ok(T::default());
    }
    parse_object(raw)
}

fn parse_required<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, ServiceError> {
    let raw = params.as_str().map(str::trim).unwrap_or("");
    if raw.is_empty() || raw == "null" || raw == "[]" {
        return parse_object("{}");
    }
    parse_object(raw)
}

fn parse_object<T: DeserializeOwned>(raw: &str) -> Result<T, ServiceError> {
    if !raw.starts_with('{') {
        return Err(ServiceError::invalid("params", "must be an object of named parameters"));
    }
    let de = &mut serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports an unknown or missing field in the message, not the path.
        let field = if path == "." || path.is_empty() {
            backticked(&inner).unwrap_or_else(|| "params".to_string())
        } else {
            path
        };
        let rule = inner.split(" at line ").next().unwrap_or(&inner);
        ServiceError::invalid(field, without_value(rule))
    })
}

/// serde's rule without the offending value: `invalid type: string "...",
/// expected u32` would echo whatever was sent, a secret pasted into the
/// wrong field included.
fn without_value(rule: &str) -> String {
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if let Some(rest) = rule.strip_prefix(kind) {
            return match rest.split_once(", expected ") {
                Some((_, expected)) => format!("{kind}: expected {expected}"),
                None => kind.to_string(),
            };
        }
    }
    rule.to_string()
}

/// The first `` `name` `` in a serde message (the unknown/missing field).
fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// Refuses the call unless the connection's peer may call `name`.
pub(crate) fn authorize(ext: &Extensions, name: &str) -> Result<(), ServiceError> {
    let access = method_spec(name).map(|m| m.access).unwrap_or(Access::Mutating);
    let peer = ext.get::<Peer>();
    match peer {
        Some(p) if p.access.allows(access) => Ok(()),
        Some(p) => {
            // The methods that return a secret are full-access for that
            // reason, not because they change anything.
            let why = if matches!(name, method::CLUSTER_TOKEN | method::BACKEND_TOKEN) {
                "it returns a secret"
            } else {
                "it changes state"
            };
            Err(ServiceError::new(
                ErrorCode::Unauthorized,
                format!(
                    "uid {} may not call {name}: {why} and needs the daemon's uid or root",
                    p.uid
                ),
            ))
        }
        None => Err(ServiceError::new(
            ErrorCode::Unauthorized,
            format!("unknown peer may not call {name}"),
        )),
    }
}

fn to_rpc<T: Serialize>(r: Result<T, ServiceError>) -> Result<T, ErrorObjectOwned> {
    r.map_err(|e| e.to_rpc())
}

/// Registers one async method whose params are parsed as `P` and whose work
/// is `f(service, params)`.
macro_rules! method {
    ($module:expr, $name:expr, $parse:ident, |$svc:ident, $p:ident| $body:expr) => {
        $module
            .register_async_method($name, |params, ctx, ext| async move {
                let result = async {
                    authorize(&ext, $name)?;
                    let $p = $parse(&params)?;
                    let $svc = ctx;
                    $body.await
                }
                .await;
                to_rpc(result)
            })
            .map_err(|e| e.to_string())?;
    };
}

/// Builds the module: exactly the methods of [`hero_livekit_proto::METHODS`]
/// (a test keeps the two equal).
///
/// # Errors
/// A method registered twice (a programming error caught by tests).
pub fn module(service: Arc<LivekitService>) -> Result<RpcModule<LivekitService>, String> {
    // Serialized once: a call answers with these bytes as they are, instead
    // of cloning the document's tree and serializing it again each time.
    let doc = serde_json::value::to_raw_value(&*service.openrpc()).map_err(|e| e.to_string())?;
    let mut m = RpcModule::from_arc(service);
    method!(m, method::INSTALL, parse_params, |s, p| s.install(p));
    method!(m, method::CONFIGURE, parse_params, |s, p| s.configure(p));
    method!(m, method::START, parse_params, |s, p| s.start(p));
    method!(m, method::STOP, parse_params, |s, p| s.stop(p));
    method!(m, method::RESTART, parse_params, |s, p| s.restart(p));
    method!(m, method::LOGS, parse_required, |s, p| s.logs(p));
    m.register_method(method::HEALTH, |params, ctx, ext| {
        to_rpc(authorize(ext, method::HEALTH).and_then(|()| {
            parse_params::<hero_livekit_proto::NoParams>(&params)?;
            ctx.metrics().count_health(crate::metrics::HealthVia::Rpc);
            ctx.health_json().map(|(json, _)| json)
        }))
    })
    .map_err(|e| e.to_string())?;
    m.register_method(method::CONFIG_SHOW, |params, ctx, ext| {
        to_rpc(authorize(ext, method::CONFIG_SHOW).and_then(|()| {
            parse_params::<hero_livekit_proto::NoParams>(&params)?;
            Ok(ctx.config_show())
        }))
    })
    .map_err(|e| e.to_string())?;
    m.register_method(method::CLUSTER_STATUS, |params, ctx, ext| {
        to_rpc(authorize(ext, method::CLUSTER_STATUS).and_then(|()| {
            parse_params::<hero_livekit_proto::NoParams>(&params)?;
            Ok(ctx.cluster_status())
        }))
    })
    .map_err(|e| e.to_string())?;
    m.register_method(method::CLUSTER_TOKEN, |params, ctx, ext| {
        to_rpc(authorize(ext, method::CLUSTER_TOKEN).and_then(|()| {
            parse_params::<hero_livekit_proto::NoParams>(&params)?;
            ctx.cluster_token()
        }))
    })
    .map_err(|e| e.to_string())?;
    m.register_method(method::BACKEND_TOKEN, |params, ctx, ext| {
        to_rpc(authorize(ext, method::BACKEND_TOKEN).and_then(|()| {
            parse_params::<hero_livekit_proto::NoParams>(&params)?;
            Ok(ctx.backend_token())
        }))
    })
    .map_err(|e| e.to_string())?;
    method!(m, method::CLUSTER_LEAVE, parse_params, |s, p| s.cluster_leave(p));
    m.register_method(method::DISCOVER, move |_params, _ctx, ext| {
        to_rpc(authorize(ext, method::DISCOVER).map(|()| doc.clone()))
    })
    .map_err(|e| e.to_string())?;
    m.register_subscription(
        method::SUBSCRIBE_EVENTS,
        method::EVENT_NOTIFICATION,
        method::UNSUBSCRIBE_EVENTS,
        |_params, pending, ctx, ext| async move {
            if let Err(e) = authorize(&ext, method::SUBSCRIBE_EVENTS) {
                pending.reject(e.to_rpc()).await;
                return Ok(());
            }
            let _slot = match ctx.subscription_slot() {
                Ok(slot) => slot,
                Err(e) => {
                    pending.reject(e.to_rpc()).await;
                    return Ok(());
                }
            };
            // Subscribe before accepting so no event between the two is lost.
            let mut rx = ctx.events().subscribe();
            let sink = pending.accept().await?;
            loop {
                tokio::select! {
                    _ = sink.closed() => return Ok(()),
                    ev = rx.recv() => match ev {
                        Ok(msg) => {
                            let raw = serde_json::value::to_raw_value(&msg)?;
                            sink.send(SubscriptionMessage::from(raw)).await?;
                        }
                        // A slow subscriber skips ahead; the gap shows in `seq`.
                        Err(RecvError::Lagged(n)) => tracing::warn!(skipped = n, "event subscriber lagged"),
                        Err(RecvError::Closed) => return Ok(()),
                    },
                }
            }
            #[allow(unreachable_code)]
            SubscriptionResult::Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hero_livekit_proto::{ConfigureParams, StartParams};

    fn p(s: &'static str) -> Params<'static> {
        Params::new(Some(s))
    }

    #[test]
    fn absent_null_and_empty_params_mean_defaults() {
        for raw in ["", "null", "{}", "[]"] {
            let v: StartParams = parse_params(&p(raw)).expect("defaults");
            assert_eq!(v, StartParams::default(), "{raw:?}");
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_params::<ConfigureParams>(&p(r#"{"port":"x"}"#)).expect_err("bad type");
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidParams { field: "port".into() });
    }

    #[test]
    fn a_wrong_type_is_refused_without_echoing_the_value() {
        let secret = "s3cr3tValueThatMustNeverBePrinted0123456789";
        for raw in [
            format!(r#"{{"port":"{secret}"}}"#),
            format!(r#"{{"api_key":["{secret}"]}}"#),
            format!(r#"{{"rtc_tcp_port":{{"{secret}":1}}}}"#),
        ] {
            let e = parse_params::<ConfigureParams>(&Params::new(Some(&raw))).expect_err("bad type");
            assert!(!e.message.contains(secret), "{}", e.message);
            assert!(e.message.contains("expected"), "{}", e.message);
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse_params::<ConfigureParams>(&p(r#"{"prot":1}"#)).expect_err("unknown");
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidParams { field: "prot".into() });
    }

    #[test]
    fn positional_params_are_refused() {
        let e = parse_params::<StartParams>(&p("[true]")).expect_err("positional");
        assert_eq!(
            e.kind,
            crate::error::ErrorKind::InvalidParams { field: "params".into() }
        );
    }
}
