//! Registry credentials (in progress).
