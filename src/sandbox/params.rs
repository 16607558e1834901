//! Stripe's request encoding: form pairs in bracket notation
//! (`line_items[0][price_data][unit_amount]=1000`, `expand[]=line_items`) parsed into a
//! tree, and typed accessors whose errors name the parameter as Stripe does.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Parses a form body or query string into a JSON object whose leaves are strings;
/// objects keyed only by indices become arrays.
pub(crate) fn parse(input: &[u8]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in url::form_urlencoded::parse(input) {
        insert(&mut root, &split_key(&key), value.into_owned());
    }
    into_arrays(root)
}

/// `a[b][]` → `["a", "b", ""]`; a key with unbalanced brackets is taken literally.
fn split_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut segments = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while !rest.is_empty() {
        let Some(close) = rest.find(']').filter(|_| rest.starts_with('[')) else {
            return vec![key.to_owned()];
        };
        segments.push(rest[1..close].to_owned());
        rest = &rest[close + 1..];
    }
    segments
}

fn insert(node: &mut Value, segments: &[String], leaf: String) {
    let Some((first, rest)) = segments.split_first() else {
        *node = Value::String(leaf);
        return;
    };
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        // `expand[]=a&expand[]=b` appends: the next free index
        let key = if first.is_empty() {
            map.len().to_string()
        } else {
            first.clone()
        };
        insert(map.entry(key).or_insert(Value::Null), rest, leaf);
    }
}

fn into_arrays(node: Value) -> Value {
    let Value::Object(map) = node else {
        return node;
    };
    let indexed: Option<Vec<(usize, Value)>> = map
        .iter()
        .map(|(key, value)| key.parse::<usize>().ok().map(|i| (i, value.clone())))
        .collect();
    match indexed {
        Some(mut items) if !items.is_empty() => {
            items.sort_by_key(|(i, _)| *i);
            Value::Array(
                items
                    .into_iter()
                    .map(|(_, value)| into_arrays(value))
                    .collect(),
            )
        }
        _ => Value::Object(map.into_iter().map(|(k, v)| (k, into_arrays(v))).collect()),
    }
}

/// One parameter of a parsed request, present or not, with its Stripe-style name.
#[derive(Debug, Clone)]
pub(crate) struct Param<'a> {
    value: Option<&'a Value>,
    name: String,
}

impl<'a> Param<'a> {
    /// The whole request.
    pub(crate) fn root(value: &'a Value) -> Self {
        Self {
            value: Some(value),
            name: String::new(),
        }
    }

    /// A named child: `line_items` → `line_items[0][price_data]`.
    pub(crate) fn get(&self, key: &str) -> Self {
        let name = if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}[{key}]", self.name)
        };
        Self {
            value: self.value.and_then(|value| value.get(key)),
            name,
        }
    }

    /// The parameter's name as Stripe spells it in errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_present(&self) -> bool {
        self.value.is_some()
    }

    /// The elements of an array parameter; absent means none.
    pub(crate) fn list(&self) -> Result<Vec<Self>, ApiError> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| Self {
                    value: Some(value),
                    name: format!("{}[{i}]", self.name),
                })
                .collect()),
            Some(_) => Err(ApiError::invalid(
                None,
                &self.name,
                format!("Invalid array: {}", self.name),
            )),
        }
    }

    /// A string; absent or empty is `None`.
    pub(crate) fn string(&self) -> Result<Option<&'a str>, ApiError> {
        match self.value {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(
                None,
                &self.name,
                format!("Invalid string: {} must be a single value", self.name),
            )),
        }
    }

    pub(crate) fn required_string(&self) -> Result<&'a str, ApiError> {
        self.string()?
            .ok_or_else(|| ApiError::missing_param(&self.name))
    }

    /// A whole number.
    pub(crate) fn integer(&self) -> Result<Option<i64>, ApiError> {
        self.string()?
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        Some("parameter_invalid_integer"),
                        &self.name,
                        format!("Invalid integer: {s}"),
                    )
                })
            })
            .transpose()
    }

    /// A string that an update may unset: absent is `None`, empty is `Some(None)`.
    pub(crate) fn nullable_string(&self) -> Result<Option<Option<&'a str>>, ApiError> {
        if !self.is_present() {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// A string an update may change but never unset, such as a product's `name`.
    pub(crate) fn non_empty_string(&self) -> Result<Option<&'a str>, ApiError> {
        match self.nullable_string()? {
            None => Ok(None),
            Some(Some(text)) => Ok(Some(text)),
            Some(None) => Err(ApiError::invalid(
                None,
                &self.name,
                format!(
                    "You passed an empty string for '{name}'. We assume empty values are an \
                     attempt to unset a parameter; however '{name}' cannot be unset. You \
                     should remove '{name}' from your request or supply a non-empty value.",
                    name = self.name
                ),
            )),
        }
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&self) -> Result<Option<bool>, ApiError> {
        match self.string()? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(
                None,
                &self.name,
                format!("Invalid boolean: {other}"),
            )),
        }
    }

    /// A three-letter ISO currency code, lowercased.
    pub(crate) fn currency(&self) -> Result<Option<String>, ApiError> {
        let Some(text) = self.string()? else {
            return Ok(None);
        };
        let currency = text.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ApiError::invalid(
                None,
                &self.name,
                format!("Invalid currency: {currency}."),
            ));
        }
        Ok(Some(currency))
    }

    /// The elements of an array of strings (`lookup_keys[]=a&lookup_keys[]=b`);
    /// `None` when absent.
    pub(crate) fn string_list(&self) -> Result<Option<Vec<String>>, ApiError> {
        if !self.is_present() {
            return Ok(None);
        }
        let mut strings = Vec::new();
        for item in self.list()? {
            strings.extend(item.string()?.map(str::to_owned));
        }
        Ok(Some(strings))
    }

    /// A list's `limit`: 1 to 100, 10 when absent.
    pub(crate) fn limit(&self) -> Result<i64, ApiError> {
        match self.integer()? {
            None => Ok(10),
            Some(limit) if (1..=100).contains(&limit) => Ok(limit),
            Some(limit) => Err(ApiError::invalid(
                None,
                &self.name,
                format!(
                    "Invalid integer: {limit}; {} must be between 1 and 100",
                    self.name
                ),
            )),
        }
    }

    /// Refuses parameters the endpoint does not take, as Stripe does
    /// (`parameter_unknown`), and the ones Stripe takes but the sandbox does not
    /// (`unsupported`).
    pub(crate) fn reject_unknown(
        &self,
        known: &[&str],
        unsupported: &[&str],
    ) -> Result<(), ApiError> {
        let Some(Value::Object(map)) = self.value else {
            return Ok(());
        };
        let Some(key) = map.keys().find(|key| !known.contains(&key.as_str())) else {
            return Ok(());
        };
        let param = self.get(key);
        if unsupported.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                None,
                param.name(),
                format!(
                    "The billfold Stripe sandbox does not support {} yet.",
                    param.name()
                ),
            ));
        }
        Err(ApiError::invalid(
            Some("parameter_unknown"),
            param.name(),
            format!("Received unknown parameter: {}", param.name()),
        ))
    }

    /// Refuses a non-empty `expand[]` for objects with no expandable field the sandbox
    /// fills in.
    pub(crate) fn reject_expand(&self) -> Result<(), ApiError> {
        let expand = self.get("expand");
        match expand.string_list()? {
            Some(fields) if !fields.is_empty() => Err(ApiError::invalid(
                None,
                expand.name(),
                format!(
                    "The billfold Stripe sandbox cannot expand {} here.",
                    fields.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Applies a metadata update as Stripe does: given keys are set, a key with an
    /// empty value is removed, and an empty `metadata` removes every key.
    pub(crate) fn update_metadata(
        &self,
        metadata: &mut Map<String, Value>,
    ) -> Result<(), ApiError> {
        match self.value {
            None => Ok(()),
            Some(Value::String(s)) if s.is_empty() => {
                metadata.clear();
                Ok(())
            }
            Some(Value::Object(map)) => {
                let set = self.metadata()?;
                for key in map.keys() {
                    if !set.contains_key(key) {
                        metadata.remove(key);
                    }
                }
                metadata.extend(set);
                Ok(())
            }
            Some(_) => self.metadata().map(drop),
        }
    }

    /// Stripe metadata: string values, keys of at most 40 characters, values of at
    /// most 500; an empty value drops the key.
    pub(crate) fn metadata(&self) -> Result<Map<String, Value>, ApiError> {
        let Some(value) = self.value else {
            return Ok(Map::new());
        };
        let Value::Object(map) = value else {
            return Err(ApiError::invalid(
                None,
                &self.name,
                format!(
                    "Invalid object: {} must be a hash of keys and values",
                    self.name
                ),
            ));
        };
        let mut metadata = Map::new();
        for key in map.keys() {
            let entry = self.get(key);
            if key.chars().count() > 40 {
                return Err(ApiError::invalid(
                    None,
                    entry.name(),
                    format!("Metadata keys can have up to 40 characters: {key}"),
                ));
            }
            if let Some(text) = entry.string()? {
                if text.chars().count() > 500 {
                    return Err(ApiError::invalid(
                        None,
                        entry.name(),
                        format!("Metadata values can have up to 500 characters: {key}"),
                    ));
                }
                metadata.insert(key.clone(), Value::String(text.to_owned()));
            }
        }
        Ok(metadata)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bracket_notation_becomes_nested_objects_and_arrays() {
        let body = "mode=payment&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=1000\
                    &line_items[1][quantity]=2&line_items[0][quantity]=3\
                    &metadata[workspace_id]=ws_1&expand[]=a&expand[]=b&success_url=https%3A%2F%2Fx%2F%7BCHECKOUT_SESSION_ID%7D";
        assert_eq!(
            parse(body.as_bytes()),
            json!({
                "mode": "payment",
                "line_items": [
                    {"price_data": {"unit_amount": "1000"}, "quantity": "3"},
                    {"quantity": "2"}
                ],
                "metadata": {"workspace_id": "ws_1"},
                "expand": ["a", "b"],
                "success_url": "https://x/{CHECKOUT_SESSION_ID}"
            })
        );
    }

    #[test]
    fn errors_name_the_nested_parameter() {
        let value = parse(b"line_items[0][quantity]=many");
        let items = Param::root(&value).get("line_items").list().unwrap();
        let err = items[0].get("quantity").integer().unwrap_err();
        let ApiError::Refused { param, code, .. } = err else {
            panic!("expected a refusal")
        };
        assert_eq!(param.as_deref(), Some("line_items[0][quantity]"));
        assert_eq!(code, Some("parameter_invalid_integer"));
    }

    #[test]
    fn unbalanced_brackets_are_taken_literally() {
        assert_eq!(parse(b"a[b=1"), json!({"a[b": "1"}));
    }
}
