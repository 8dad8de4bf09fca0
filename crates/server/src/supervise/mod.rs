//! Child supervision. (filled by the supervision work)
