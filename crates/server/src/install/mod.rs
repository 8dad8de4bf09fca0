//! Installing livekit-server. (filled by the install work)
