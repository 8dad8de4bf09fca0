//! Turning a validated request into a LiveKit access token, with LiveKit's own
//! token library so the claims are exactly what livekit-server expects.

use livekit_api::access_token::{AccessToken, AccessTokenError, Claims, VideoGrants};
use serde::Serialize;

use crate::config::Credential;
use crate::request::TokenRequest;

/// The `POST /token` response body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuedToken {
    /// The signed JWT.
    pub token: String,
    /// The LiveKit URL to connect to with it.
    pub url: String,
    /// The key it was signed for (its `iss`).
    pub api_key: String,
    /// Unix seconds, the token's `exp` claim.
    pub expires_at: u64,
}

/// Why a token could not be signed. The library's messages carry no key
/// material, only the kind of failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token: {0:?}")]
pub struct MintError(AccessTokenError);

/// Signs a token for one participant of one room.
///
/// # Errors
/// The token library refuses the claims or fails to encode them; with a
/// validated request and a non-empty credential this does not happen.
pub fn mint(credential: &Credential, req: &TokenRequest) -> Result<IssuedToken, MintError> {
    let grants = VideoGrants {
        room_join: true,
        room: req.room.clone(),
        can_publish: req.can_publish,
        can_subscribe: req.can_subscribe,
        can_publish_data: req.can_publish_data,
        ..Default::default()
    };
    let mut token = AccessToken::with_api_key(&credential.api_key, credential.api_secret.expose())
        .with_identity(&req.identity)
        .with_ttl(req.ttl)
        .with_grants(grants);
    if let Some(name) = &req.name {
        token = token.with_name(name);
    }
    if let Some(metadata) = &req.metadata {
        token = token.with_metadata(metadata);
    }
    let jwt = token.to_jwt().map_err(MintError)?;
    // The library stamps `exp` from its own clock reading; reading it back
    // from what was signed is the only way `expires_at` cannot be off by one
    // second around a boundary.
    let claims = Claims::from_unverified(&jwt).map_err(MintError)?;
    Ok(IssuedToken {
        token: jwt,
        url: credential.url.clone(),
        api_key: credential.api_key.clone(),
        expires_at: claims.exp as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use livekit_api::access_token::TokenVerifier;

    use super::*;
    use crate::config::ApiSecret;

    fn credential() -> Credential {
        Credential {
            api_key: "APIkey".into(),
            api_secret: ApiSecret::new("a-secret-of-at-least-thirty-two-chars!".into()),
            url: "ws://127.0.0.1:7880".into(),
            mint_secret: ApiSecret::new("m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt".into()),
        }
    }

    fn request() -> TokenRequest {
        TokenRequest {
            room: "r1".into(),
            identity: "alice".into(),
            name: Some("Alice".into()),
            ttl: Duration::from_secs(600),
            metadata: Some("{\"a\":1}".into()),
            can_publish: Some(false),
            can_subscribe: None,
            can_publish_data: Some(true),
        }
    }

    #[test]
    fn token_carries_the_request_and_verifies_with_the_secret() {
        let c = credential();
        let issued = mint(&c, &request()).expect("mints");
        let claims = TokenVerifier::with_api_key(&c.api_key, c.api_secret.expose())
            .verify(&issued.token)
            .expect("verifies");
        assert_eq!(claims.iss, "APIkey");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.name, "Alice");
        assert_eq!(claims.metadata, "{\"a\":1}");
        assert!(claims.video.room_join);
        assert_eq!(claims.video.room, "r1");
        assert_eq!(claims.video.can_publish, Some(false));
        assert_eq!(claims.video.can_subscribe, None);
        assert_eq!(claims.video.can_publish_data, Some(true));
        assert_eq!(issued.expires_at, claims.exp as u64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        assert!((now + 599..=now + 601).contains(&issued.expires_at));
        assert_eq!(issued.url, c.url);
        assert_eq!(issued.api_key, c.api_key);
    }

    #[test]
    fn another_secret_does_not_verify() {
        let issued = mint(&credential(), &request()).expect("mints");
        let wrong = TokenVerifier::with_api_key("APIkey", "another-secret-of-thirty-two-chars!!");
        assert!(wrong.verify(&issued.token).is_err());
    }
}
