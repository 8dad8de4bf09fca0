//! `configure`'s production-setting flags (kebab case of the method's
//! parameter names; lists repeat the flag) and `config show`'s output.

use clap::Args;
use hero_livekit_client::wire as proto;

/// `--unset` accepts each name the table marks as removable, in snake or
/// kebab case; the result is the parameter name.
pub fn parse_unset(s: &str) -> Result<String, String> {
    let snake = s.replace('-', "_");
    if proto::fields::field(&snake).is_some_and(|f| f.unset) {
        Ok(snake)
    } else {
        let kebab: Vec<String> = proto::fields::unsettable().map(|n| n.replace('_', "-")).collect();
        Err(format!("must be one of {}", kebab.join(", ")))
    }
}

#[derive(Debug, Clone, Args, Default)]
pub struct SettingsArgs {
    /// IP address livekit-server listens on; repeat for several (default: all).
    #[arg(long = "bind-addresses", value_name = "IP")]
    pub bind_addresses: Vec<String>,
    /// Discover the public IP through STUN (rtc.use_external_ip).
    #[arg(long, value_name = "BOOL")]
    pub use_external_ip: Option<bool>,
    /// Offer loopback ICE candidates, for WebRTC on one machine (rtc.enable_loopback_candidate; livekit-server 1.3.2+).
    #[arg(long, value_name = "BOOL")]
    pub rtc_enable_loopback_candidate: Option<bool>,
    /// One muxed UDP media port, or a range START-END (rtc.udp_port).
    #[arg(long, value_name = "PORT|START-END")]
    pub rtc_udp_port: Option<String>,
    /// STUN server host:port; repeat for several.
    #[arg(long = "stun-servers", value_name = "HOST:PORT")]
    pub stun_servers: Vec<String>,
    /// External TURN server as JSON `{"host","port","protocol","username","credential"}`
    /// or `{"host","port","protocol","secret"}`; repeat for several.
    #[arg(long = "turn-servers", value_name = "JSON", value_parser = parse_turn_server)]
    pub turn_servers: Vec<proto::TurnServerParam>,
    /// Run the embedded TURN server (needs --turn-domain and TLS: --turn-external-tls or a cert pair).
    #[arg(long, value_name = "BOOL")]
    pub turn_enabled: Option<bool>,
    /// Public hostname of the embedded TURN server.
    #[arg(long)]
    pub turn_domain: Option<String>,
    /// TURN/TLS port (default 5349).
    #[arg(long)]
    pub turn_tls_port: Option<u32>,
    /// TURN/UDP port (default 3478).
    #[arg(long)]
    pub turn_udp_port: Option<u32>,
    /// TLS for TURN is ended by a proxy in front.
    #[arg(long, value_name = "BOOL")]
    pub turn_external_tls: Option<bool>,
    /// TURN/TLS certificate file (absolute path).
    #[arg(long)]
    pub turn_cert_file: Option<String>,
    /// TURN/TLS private key file (absolute path).
    #[arg(long)]
    pub turn_key_file: Option<String>,
    /// http(s) URL to post webhooks to; repeat for several (signed with the active API key).
    #[arg(long = "webhook-urls", value_name = "URL")]
    pub webhook_urls: Vec<String>,
    /// Create rooms on first join (default true).
    #[arg(long, value_name = "BOOL")]
    pub room_auto_create: Option<bool>,
    /// Seconds an empty room lives (default 300).
    #[arg(long)]
    pub room_empty_timeout: Option<u32>,
    /// Seconds a room lives after the last participant left (default 20).
    #[arg(long)]
    pub room_departure_timeout: Option<u32>,
    /// Most participants in a room, 0 for no limit.
    #[arg(long)]
    pub room_max_participants: Option<u32>,
    /// Codec MIME type rooms may use (audio/opus, video/vp8, ...); repeat for several.
    #[arg(long = "room-enabled-codecs", value_name = "MIME")]
    pub room_enabled_codecs: Vec<String>,
    /// debug, info, warn or error (default info).
    #[arg(long)]
    pub log_level: Option<String>,
    /// JSON log lines.
    #[arg(long, value_name = "BOOL")]
    pub log_json: Option<bool>,
    /// Port of livekit-server's Prometheus endpoint.
    #[arg(long)]
    pub prometheus_port: Option<u32>,
    /// Basic-auth user of the Prometheus endpoint (livekit-server 1.7.1+).
    #[arg(long)]
    pub prometheus_username: Option<String>,
    /// Basic-auth password of the Prometheus endpoint (livekit-server 1.7.1+).
    #[arg(long)]
    pub prometheus_password: Option<String>,
    /// Region of this node.
    #[arg(long)]
    pub region: Option<String>,
}

fn parse_turn_server(s: &str) -> Result<proto::TurnServerParam, String> {
    serde_json::from_str(s).map_err(|e| format!("not a TURN server object: {e}"))
}

fn list<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

impl SettingsArgs {
    /// These flags as `configure` parameters (the others left empty).
    pub fn params(&self) -> proto::ConfigureParams {
        proto::ConfigureParams {
            bind_addresses: list(&self.bind_addresses),
            use_external_ip: self.use_external_ip,
            rtc_enable_loopback_candidate: self.rtc_enable_loopback_candidate,
            rtc_udp_port: self.rtc_udp_port.clone().map(|t| match t.parse::<u32>() {
                Ok(n) => proto::UdpPortParam::Port(n),
                Err(_) => proto::UdpPortParam::Text(t),
            }),
            stun_servers: list(&self.stun_servers),
            turn_servers: list(&self.turn_servers),
            turn_enabled: self.turn_enabled,
            turn_domain: self.turn_domain.clone(),
            turn_tls_port: self.turn_tls_port,
            turn_udp_port: self.turn_udp_port,
            turn_external_tls: self.turn_external_tls,
            turn_cert_file: self.turn_cert_file.clone(),
            turn_key_file: self.turn_key_file.clone(),
            webhook_urls: list(&self.webhook_urls),
            room_auto_create: self.room_auto_create,
            room_empty_timeout: self.room_empty_timeout,
            room_departure_timeout: self.room_departure_timeout,
            room_max_participants: self.room_max_participants,
            room_enabled_codecs: list(&self.room_enabled_codecs),
            log_level: self.log_level.clone(),
            log_json: self.log_json,
            prometheus_port: self.prometheus_port,
            prometheus_username: self.prometheus_username.clone(),
            prometheus_password: self.prometheus_password.clone(),
            region: self.region.clone(),
            ..proto::ConfigureParams::default()
        }
    }
}

/// `config show` as a table: name, value, and a mark on what differs from
/// LiveKit's defaults.
pub fn print_show(r: &proto::ConfigShowResult) {
    outln!(
        "rendered for livekit-server {}",
        r.target_version.as_deref().unwrap_or("(unknown: every key)")
    );
    let width = r.settings.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &r.settings {
        let value = match &s.value {
            serde_json::Value::String(t) => t.clone(),
            serde_json::Value::Null => "-".to_string(),
            v => v.to_string(),
        };
        let mark = if s.differs { "*" } else { " " };
        let note = s
            .needs_version
            .as_ref()
            .map(|v| format!("  (left out: needs livekit-server {v})"))
            .unwrap_or_default();
        outln!("{mark} {:width$}  {value}{note}", s.name);
    }
    outln!("* differs from the default");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_takes_both_spellings_and_only_known_names() {
        assert_eq!(parse_unset("webhook-urls").as_deref(), Ok("webhook_urls"));
        assert_eq!(parse_unset("node_ip").as_deref(), Ok("node_ip"));
        assert!(parse_unset("api-secret").is_err());
    }

    #[test]
    fn flags_become_parameters() {
        let a = SettingsArgs {
            rtc_udp_port: Some("7882-7892".into()),
            webhook_urls: vec!["https://a.example.org".into(), "https://b.example.org".into()],
            turn_servers: vec![parse_turn_server(
                r#"{"host":"t.example.org","port":3478,"protocol":"udp","secret":"s"}"#,
            )
            .expect("turn server")],
            ..SettingsArgs::default()
        };
        let p = a.params();
        assert_eq!(p.rtc_udp_port, Some(proto::UdpPortParam::Text("7882-7892".into())));
        assert_eq!(p.webhook_urls.map(|l| l.len()), Some(2));
        assert_eq!(p.turn_servers.map(|l| l[0].port), Some(3478));
        assert_eq!(p.stun_servers, None);
        let one = SettingsArgs {
            rtc_udp_port: Some("7882".into()),
            ..SettingsArgs::default()
        };
        assert_eq!(one.params().rtc_udp_port, Some(proto::UdpPortParam::Port(7882)));
    }
}
