//! Keygate control plane: key lifecycle service, sync feed and GitHub App token broker.
