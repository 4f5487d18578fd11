//! Query binding with gin v1.7's rules (`binding/form_mapping.go`), which goim's clients rely on:
//!
//! - a slice is the repeated parameter (`keys=a&keys=b`); commas are not split;
//! - a scalar takes the first value; an empty integer value is 0;
//! - `required` rejects 0 for an integer, "" for a string and an empty list for a slice;
//! - a value that is not a number is an error.
//!
//! axum's `Query` cannot do repeated parameters, so the raw query is parsed here.

use std::str::FromStr;

use super::ApiError;

/// Whether a parameter is `binding:"required"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Required,
    Optional,
}

/// The decoded `name=value` pairs of a query string, in order.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Query {
        let pairs =
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        Query(pairs)
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn string(&self, name: &str, need: Need) -> Result<String, ApiError> {
        let value = self.values(name).next().unwrap_or_default();
        if need == Need::Required && value.is_empty() {
            return Err(missing(name));
        }
        Ok(value.to_owned())
    }

    pub(super) fn strings(&self, name: &str, need: Need) -> Result<Vec<String>, ApiError> {
        let values: Vec<String> = self.values(name).map(str::to_owned).collect();
        if need == Need::Required && values.is_empty() {
            return Err(missing(name));
        }
        Ok(values)
    }

    /// An integer parameter; absent or empty is 0.
    pub(super) fn int<T: FromStr + Default + PartialEq>(
        &self,
        name: &str,
        need: Need,
    ) -> Result<T, ApiError> {
        let value = match self.values(name).next() {
            Some(v) => parse_int(name, v)?,
            None => T::default(),
        };
        if need == Need::Required && value == T::default() {
            return Err(missing(name));
        }
        Ok(value)
    }

    pub(super) fn ints<T: FromStr + Default>(&self, name: &str, need: Need) -> Result<Vec<T>, ApiError> {
        let values = self.values(name).map(|v| parse_int(name, v)).collect::<Result<Vec<T>, _>>()?;
        if need == Need::Required && values.is_empty() {
            return Err(missing(name));
        }
        Ok(values)
    }
}

fn parse_int<T: FromStr + Default>(name: &str, value: &str) -> Result<T, ApiError> {
    if value.is_empty() {
        return Ok(T::default());
    }
    value.parse().map_err(|_| ApiError::Binding(format!("{name}: {value:?} is not a valid integer")))
}

fn missing(name: &str) -> ApiError {
    ApiError::Binding(format!("{name} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_message(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::Binding(message)) => message,
            other => panic!("expected a binding error, got {other:?}"),
        }
    }

    #[test]
    fn repeated_parameters_form_a_slice_and_commas_are_kept() {
        let q = Query::parse(Some("keys=a&keys=b%2Cc&keys=d,e&other=x"));
        assert_eq!(q.strings("keys", Need::Required).unwrap(), ["a", "b,c", "d,e"]);
    }

    #[test]
    fn a_scalar_takes_the_first_value() {
        let q = Query::parse(Some("operation=7&operation=8"));
        assert_eq!(q.int::<i32>("operation", Need::Required).unwrap(), 7);
    }

    #[test]
    fn required_integers_reject_absent_empty_and_zero() {
        for raw in ["", "operation=", "operation=0"] {
            let q = Query::parse(Some(raw));
            assert_eq!(binding_message(q.int::<i32>("operation", Need::Required)), "operation is required");
            assert_eq!(q.int::<i32>("operation", Need::Optional).unwrap(), 0);
        }
    }

    #[test]
    fn non_numeric_and_out_of_range_integers_are_binding_errors() {
        for raw in ["operation=abc", "operation=1.5", "operation=2147483648", "operation=%201"] {
            let q = Query::parse(Some(raw));
            assert!(
                binding_message(q.int::<i32>("operation", Need::Optional)).starts_with("operation: "),
                "{raw}"
            );
        }
        let q = Query::parse(Some("mids=1&mids=x"));
        assert!(binding_message(q.ints::<i64>("mids", Need::Optional)).contains("\"x\""));
    }

    #[test]
    fn integer_slices_parse_every_value() {
        let q = Query::parse(Some("mids=1&mids=-2&mids=%2B3"));
        assert_eq!(q.ints::<i64>("mids", Need::Required).unwrap(), [1, -2, 3]);
        assert_eq!(binding_message(q.ints::<i64>("absent", Need::Required)), "absent is required");
    }

    #[test]
    fn required_strings_reject_empty_and_plus_decodes_to_space() {
        let q = Query::parse(Some("type=&room=a+b"));
        assert_eq!(binding_message(q.string("type", Need::Required)), "type is required");
        assert_eq!(q.string("room", Need::Required).unwrap(), "a b");
        assert_eq!(Query::parse(None).string("type", Need::Optional).unwrap(), "");
    }
}
