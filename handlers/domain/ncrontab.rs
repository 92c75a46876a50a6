//! Six-field NCRONTAB schedules.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(String);

impl Schedule {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.split_whitespace().count() != 6 {
            return Err("six fields required".into());
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
