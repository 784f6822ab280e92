//! Error kinds and their exit codes.

use std::fmt;

/// Bad input: names the field and the value; exit status 2; nothing was changed.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageError {
    pub field: String,
    pub value: String,
    pub message: String,
}

impl UsageError {
    pub fn new(field: &str, value: &str, message: &str) -> Self {
        UsageError {
            field: field.to_string(),
            value: value.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.message)
        } else {
            write!(f, "{} = {:?}: {}", self.field, self.value, self.message)
        }
    }
}

impl std::error::Error for UsageError {}

/// Exit status for an error chain: 2 for bad input, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}
