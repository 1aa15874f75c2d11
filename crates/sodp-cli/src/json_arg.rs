//! JSON arguments: parsed with a message that says which argument was wrong.

use std::io::Read;

use serde_json::Value as Json;

use crate::error::CliError;

/// Parses `text` (or standard input when it is `-`) as JSON. `what` names
/// the argument in the error message.
pub fn parse(what: &str, text: &str) -> Result<Json, CliError> {
    let text = if text == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read {what} from stdin: {e}")))?;
        buf
    } else {
        text.to_owned()
    };
    serde_json::from_str(&text).map_err(|e| {
        let hint = if text.trim_start().starts_with(|c: char| c.is_alphabetic()) {
            " (strings need quotes, e.g. '\"text\"')"
        } else {
            ""
        };
        CliError::Usage(format!("invalid JSON for {what}: {e}{hint}"))
    })
}

/// Like [`parse`], but the value must be an object.
pub fn parse_object(what: &str, text: &str) -> Result<Json, CliError> {
    let v = parse(what, text)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(CliError::Usage(format!(
            "{what} must be a JSON object like '{{\"field\": 1}}'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_json() {
        assert_eq!(parse("VALUE", "[1, 2]").unwrap(), serde_json::json!([1, 2]));
        let e = parse("VALUE", "hello").unwrap_err().to_string();
        assert!(e.starts_with("invalid JSON for VALUE:"), "{e}");
        assert!(e.contains("quotes"), "{e}");
        let e = parse_object("PATCH", "3").unwrap_err().to_string();
        assert!(e.contains("must be a JSON object"), "{e}");
    }
}
