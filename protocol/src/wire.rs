//! The key-set wire format (work in progress).
