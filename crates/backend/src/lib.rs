//! lk-backend: the LiveKit token signer that hero_livekit runs as a child.
//!
//! It signs LiveKit access tokens with the credential of `backend.env`, the
//! same credential the supervisor writes into `livekit.yaml`, and re-reads it
//! on SIGHUP without dropping requests. Only callers presenting the file's
//! `MINT_SECRET` as a bearer (`Authorization: Bearer ...`) get a token;
//! anyone else on the host gets 401. Layout:
//! - [`config`]: where the settings come from and what makes them valid (pure);
//! - [`limits`]: every limit of the HTTP listener, in one value;
//! - [`request`]: decoding and validating `POST /token` bodies (pure);
//! - [`mint`]: signing a token with LiveKit's own library (pure);
//! - [`app`]: the HTTP routes and the shared credential;
//! - [`serve`]: the shell (bind, signals, reload).

#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod limits;
pub mod mint;
pub mod request;
pub mod serve;
