//! End-to-end tests of turnpike live in `tests/tests/`; this library holds shared helpers.
