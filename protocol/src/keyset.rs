//! The in-memory key set (work in progress).
