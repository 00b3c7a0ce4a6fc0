//! End-to-end test support for Keygate.
