//! Typed access: serde types ↔ SODP values, through `serde_json::Value`.
//!
//! Going through JSON keeps this crate free of a serde implementation for
//! the shared `Value` type; the cost is that binary values surface as arrays
//! of byte values, which is also how the CLI prints them.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sodp_proto::Value;

use crate::error::{Error, Result};

/// Converts any serializable value.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    Ok(Value::from(serde_json::to_value(value)?))
}

/// Converts a patch, which must be an object.
pub fn to_patch<T: Serialize + ?Sized>(patch: &T) -> Result<Value> {
    let patch = to_value(patch)?;
    if patch.as_map().is_none() {
        return Err(Error::Serde(format!(
            "a patch must be an object, got {}",
            patch.type_name()
        )));
    }
    Ok(patch)
}

/// Converts a value to `T`; `Ok(None)` for nil.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<Option<T>> {
    if value.is_nil() {
        return Ok(None);
    }
    serde_json::from_value(value.to_json())
        .map(Some)
        .map_err(|e| Error::Serde(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Player {
        name: String,
        health: u32,
    }

    #[test]
    fn round_trip_and_nil() {
        let p = Player {
            name: "Alice".into(),
            health: 100,
        };
        let v = to_value(&p).unwrap();
        assert_eq!(v.get("health"), Some(&Value::Int(100)));
        assert_eq!(from_value::<Player>(&v).unwrap(), Some(p));
        assert_eq!(from_value::<Player>(&Value::Nil).unwrap(), None);
        assert!(matches!(
            from_value::<Player>(&Value::Int(1)),
            Err(Error::Serde(_))
        ));
    }
}
