//! [`EngineId`]: which engine of the database a slot belongs to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The engine that owns a slot.
///
/// Stored in every extent header as one byte ([`EngineId::as_u8`]), so a
/// region file can be accounted per engine without its owner. The byte values
/// are part of the on-disk format ([`file_format`](crate::file_format)) and never change.
///
/// ```
/// use overflow_region::EngineId;
///
/// assert_eq!(EngineId::ALL.len(), 7);
/// assert_eq!(EngineId::Timeseries.to_string(), "timeseries");
/// assert_eq!("wal".parse::<EngineId>(), Ok(EngineId::Wal));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum EngineId {
    /// Vector search engine.
    Vector = 0,
    /// Sparse (inverted index) engine.
    Sparse = 1,
    /// CRDT engine.
    Crdt = 2,
    /// Time-series engine.
    Timeseries = 3,
    /// Query execution (spilled intermediates).
    Query = 4,
    /// Write-ahead log.
    Wal = 5,
    /// Bridge between engines.
    Bridge = 6,
}

impl EngineId {
    /// Every engine, in byte-value order.
    pub const ALL: [EngineId; 7] = [
        EngineId::Vector,
        EngineId::Sparse,
        EngineId::Crdt,
        EngineId::Timeseries,
        EngineId::Query,
        EngineId::Wal,
        EngineId::Bridge,
    ];

    /// The engine's on-disk byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The engine stored as `byte`, or `None` for a byte no engine uses.
    pub const fn from_u8(byte: u8) -> Option<EngineId> {
        if (byte as usize) < Self::ALL.len() {
            Some(Self::ALL[byte as usize])
        } else {
            None
        }
    }

    /// The lowercase name used by `Display`, `FromStr` and serde.
    pub const fn name(self) -> &'static str {
        match self {
            EngineId::Vector => "vector",
            EngineId::Sparse => "sparse",
            EngineId::Crdt => "crdt",
            EngineId::Timeseries => "timeseries",
            EngineId::Query => "query",
            EngineId::Wal => "wal",
            EngineId::Bridge => "bridge",
        }
    }
}

impl fmt::Display for EngineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an [`EngineId`] from a name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown engine {0:?} (expected one of vector, sparse, crdt, timeseries, query, wal, bridge)"
)]
pub struct UnknownEngine(pub String);

impl FromStr for EngineId {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineId::ALL
            .into_iter()
            .find(|engine| engine.name() == s)
            .ok_or_else(|| UnknownEngine(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_names_round_trip() {
        for engine in EngineId::ALL {
            assert_eq!(EngineId::from_u8(engine.as_u8()), Some(engine));
            assert_eq!(engine.to_string().parse::<EngineId>(), Ok(engine));
        }
        assert_eq!(EngineId::from_u8(7), None);
        assert_eq!(EngineId::from_u8(255), None);
        assert!("Vector".parse::<EngineId>().is_err());
    }
}
