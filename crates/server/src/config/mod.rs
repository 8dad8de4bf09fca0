//! The config triple. (filled by the config-triple work)
