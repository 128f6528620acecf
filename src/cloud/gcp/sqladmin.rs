//! Cloud SQL Admin API v1 calls (`instances.get`, `instances.patch`, `operations.list`,
//! `operations.get`), returning the JSON documents as the API defines them.

use super::Google;
use crate::cloud::encoding::uri_encode;
use crate::cloud::http::Request;
use crate::cloud::Result;
use serde_json::Value;

fn seg(s: &str) -> String {
    uri_encode(s, false)
}

impl Google {
    /// `GET /v1/projects/{project}/instances/{instance}` (a `DatabaseInstance`).
    pub fn sql_instance_get(&self, project: &str, instance: &str) -> Result<Value> {
        let url = format!(
            "{}/v1/projects/{}/instances/{}",
            self.sqladmin_base,
            seg(project),
            seg(instance)
        );
        self.get_json(&url, "Cloud SQL instances.get")
    }

    /// `PATCH /v1/projects/{project}/instances/{instance}` with a partial `DatabaseInstance`;
    /// returns the `Operation`.
    pub fn sql_instance_patch(&self, project: &str, instance: &str, body: &Value) -> Result<Value> {
        let url = format!(
            "{}/v1/projects/{}/instances/{}",
            self.sqladmin_base,
            seg(project),
            seg(instance)
        );
        self.send(
            Request::new("PATCH", url)
                .json(body)
                .what("Cloud SQL instances.patch"),
        )?
        .json()
    }

    /// `GET /v1/projects/{project}/operations?instance=…&maxResults=…`: operations, newest first.
    pub fn sql_operations_list(
        &self,
        project: &str,
        instance: &str,
        max_results: u32,
    ) -> Result<Vec<Value>> {
        let url = format!(
            "{}/v1/projects/{}/operations?instance={}&maxResults={max_results}",
            self.sqladmin_base,
            seg(project),
            seg(instance)
        );
        let v = self.get_json(&url, "Cloud SQL operations.list")?;
        Ok(v.get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `GET /v1/projects/{project}/operations/{operation}`; `status` is `PENDING`, `RUNNING`
    /// or `DONE` (then `error.errors[]` tells whether it failed).
    pub fn sql_operation_get(&self, project: &str, operation: &str) -> Result<Value> {
        let url = format!(
            "{}/v1/projects/{}/operations/{}",
            self.sqladmin_base,
            seg(project),
            seg(operation)
        );
        self.get_json(&url, "Cloud SQL operations.get")
    }
}
