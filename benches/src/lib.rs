//! # cmdb-benches
//!
//! Criterion benchmarks (`cargo bench -p cmdb-benches`), the HTTP load generator, and peer
//! comparisons. No product logic: everything measured is called through the product's public
//! API. Figures and the commands that reproduce them are in BENCHMARKS.md.

use cmdb_core::{Actor, Metadata, NewEvent, Source};

/// A realistic event payload of about `bytes` bytes: a CI update with attributes and padding.
pub fn payload_of_about(bytes: usize, n: u64) -> String {
    let head = format!(
        "{{\"ci\":\"host-{n:08}\",\"class\":\"host\",\"attributes\":{{\"os\":\"debian-12\",\"cpu_cores\":8,\"memory_mib\":32768}},\"note\":\""
    );
    let tail = "\"}";
    let fill = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

/// An event carrying [`payload_of_about`].
pub fn bench_event(bytes: usize, n: u64) -> NewEvent {
    NewEvent::raw(
        "ci.updated",
        payload_of_about(bytes, n),
        Metadata::new(Actor::principal("bench"), Source::System).with_correlation_id("bench"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_are_json() {
        for size in [200, 500, 1000] {
            let payload = payload_of_about(size, 42);
            assert_eq!(payload.len(), size);
            let _: serde_json_check::Value = serde_json_check::from_str(&payload).expect("json");
        }
    }

    mod serde_json_check {
        pub use serde_json::{Value, from_str};
    }
}
