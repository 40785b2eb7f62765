//! Mutation arguments as one input object (issue 16): every mutation takes `input`; the loose
//! arguments it took before stay one release, marked `@deprecated`. One rule for all of them:
//! the input, or (deprecated) the loose arguments with every required one given, never both.

use crate::server::errors::bad_input;

/// The mutation's input: `input`, or the one `loose` built from the deprecated arguments
/// (`None` when a required one is missing; `any_loose` says whether any was given).
pub fn input_or<T>(input: Option<T>, loose: Option<T>, any_loose: bool, shape: &str) -> async_graphql::Result<T> {
    match (input, any_loose) {
        (Some(input), false) => Ok(input),
        (None, true) => {
            loose.ok_or_else(|| bad_input(format!("give input: {shape} (a required deprecated argument is missing)")))
        }
        (None, false) => Err(bad_input(format!("give input: {shape}"))),
        (Some(_), true) => Err(bad_input(format!("give input: {shape}, or the deprecated arguments, not both"))),
    }
}
