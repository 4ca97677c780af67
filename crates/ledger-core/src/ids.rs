//! Identifiers validated once at the boundary, so the core never re-checks them.
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes, more than {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} has a character outside [A-Za-z0-9._:-] at byte {at}")]
    BadChar { what: &'static str, at: usize },
}

fn check(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong { what, len: s.len(), max });
    }
    match s.bytes().position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))) {
        Some(at) => Err(IdError::BadChar { what, at }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($name:ident, $what:literal, $max:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($what, &s, $max)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

id_type!(TeamId, "team_id", 64);
id_type!(EventId, "event_id", 128);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_contract_alphabet_and_refuse_the_rest() {
        assert!(TeamId::new("team-1.eu:prod_2").is_ok());
        assert_eq!(TeamId::new(""), Err(IdError::Empty { what: "team_id" }));
        assert_eq!(TeamId::new("a/b"), Err(IdError::BadChar { what: "team_id", at: 1 }));
        assert!(TeamId::new("x".repeat(64)).is_ok());
        assert!(matches!(TeamId::new("x".repeat(65)), Err(IdError::TooLong { len: 65, .. })));
        assert!(EventId::new("e".repeat(128)).is_ok());
        assert!(EventId::new("e".repeat(129)).is_err());
    }
}
