//! What `kubectl get` prints: the apiserver's Table rendering of a list (the printer columns of a
//! CRD), fetched with the same `Accept` header kubectl sends.

use kube::Client;
use serde_json::Value;

use crate::Error;

/// A `meta.k8s.io/v1` Table: column names and one row of cells per object.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Cells of each row, in column order.
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// The cell of `column` in the row whose first cell (NAME) is `name`.
    pub fn cell(&self, name: &str, column: &str) -> Option<&Value> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows
            .iter()
            .find(|r| r.first().and_then(Value::as_str) == Some(name))?
            .get(i)
    }
}

/// GETs `path` (a list URL, e.g. `/apis/gpufed.io/v1alpha1/memberclusters`) as a Table.
pub async fn table(client: &Client, path: &str) -> Result<Table, Error> {
    let req = http::Request::get(path)
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .map_err(|e| Error::Other(e.to_string()))?;
    let text = client
        .request_text(req)
        .await
        .map_err(Error::kube("getting a table"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Other(e.to_string()))?;
    let columns = v["columnDefinitions"]
        .as_array()
        .ok_or_else(|| Error::Other(format!("not a Table: {text}")))?
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let rows = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r["cells"].as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    Ok(Table { columns, rows })
}
