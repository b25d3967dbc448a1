//! Machine-readable output: objects (or a computed summary) as JSON or YAML, several objects
//! wrapped in a `v1` `List` the way `kubectl get -o json` prints them.

use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::OutputFormat;
use crate::error::{Error, Result};

/// Whether `format` asks for JSON or YAML instead of a table.
pub fn is_structured(format: OutputFormat) -> bool {
    matches!(format, OutputFormat::Json | OutputFormat::Yaml)
}

/// `obj` as a JSON value without `metadata.managedFields`, which kubectl hides too.
pub fn object<T: Serialize>(obj: &T) -> Result<Value> {
    let mut value = serde_json::to_value(obj).map_err(|e| Error::Encode {
        format: "JSON",
        message: e.to_string(),
    })?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Ok(value)
}

/// A `v1` `List` of `items` (each as [`object`]), as kubectl prints lists.
pub fn list<T: Serialize>(items: &[T]) -> Result<Value> {
    let items = items.iter().map(object).collect::<Result<Vec<_>>>()?;
    Ok(
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}),
    )
}

/// `value` encoded as `format` (JSON pretty-printed, or YAML), ending in a newline. Tables are
/// not produced here: callers render those themselves.
pub fn encode<T: Serialize>(value: &T, format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Yaml => serde_norway::to_string(value).map_err(|e| Error::Encode {
            format: "YAML",
            message: e.to_string(),
        }),
        _ => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode {
                format: "JSON",
                message: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;

    #[test]
    fn a_list_wraps_objects_with_their_api_version_and_kind() {
        let out = encode(
            &list(&[job("a").build(), job("b").build()]).unwrap(),
            OutputFormat::Json,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][1]["metadata"]["name"], "b");
        assert_eq!(v["items"][0]["apiVersion"], "gpufed.io/v1alpha1");
        assert_eq!(v["items"][0]["kind"], "ComputeJob");
    }

    #[test]
    fn managed_fields_are_left_out_like_kubectl_does() {
        let mut j = job("a").build();
        j.metadata.managed_fields = Some(vec![Default::default()]);
        let v = object(&j).unwrap();
        assert!(v["metadata"].get("managedFields").is_none(), "{v}");
        assert_eq!(v["metadata"]["name"], "a");
        assert!(
            list(&[j]).unwrap()["items"][0]["metadata"]
                .get("managedFields")
                .is_none()
        );
    }

    #[test]
    fn yaml_output_parses_back_to_the_same_value() {
        let value = list(&[job("a").build()]).unwrap();
        let out = encode(&value, OutputFormat::Yaml).unwrap();
        let back: Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(back, value);
        assert!(is_structured(OutputFormat::Yaml));
        assert!(!is_structured(OutputFormat::Wide));
    }
}
