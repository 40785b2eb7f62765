//! Scalars: `Position` (a log position, u64, sent as a JSON number; a decimal string is also
//! accepted on input, as Relay cursors are strings) and `DateTime` (RFC 3339, UTC,
//! microseconds).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use cmdb_core::Timestamp;

/// A log position: gapless, the first event is 1; 0 means "before the first event".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(pub u64);

#[Scalar(name = "Position")]
impl ScalarType for Position {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(number) => number
                .as_u64()
                .map(Position)
                .ok_or_else(|| InputValueError::custom(format!("a position is a whole number >= 0, got {number}"))),
            Value::String(text) => text
                .trim()
                .parse::<u64>()
                .map(Position)
                .map_err(|_| InputValueError::custom(format!("a position is a whole number >= 0, got {text:?}"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// An instant in UTC, RFC 3339 with microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime(pub Timestamp);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => {
                Timestamp::parse_rfc3339(text).map(DateTime).map_err(|e| InputValueError::custom(e.to_string()))
            }
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339())
    }
}
