//! Keygate proxy-wasm filter: validates prefixed API keys at the edge.
