//! HTTP edge: routes, extractors, middleware. Holds HTTP only; every decision is
//! made in `services`.

pub mod request_id;
