//! Support code for vomesh's cross-crate tests (in `tests/tests/`).
