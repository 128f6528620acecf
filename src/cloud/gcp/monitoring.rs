//! Cloud Monitoring v3 `projects.timeSeries.list` over REST. Points arrive newest first;
//! `int64Value` is a JSON *string* (proto3 JSON mapping), `doubleValue` a number.

use super::Google;
use crate::cloud::encoding::uri_encode;
use crate::cloud::time::rfc3339;
use crate::cloud::{CloudError, Result};
use serde_json::Value;

/// One point's value.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Double(f64),
    Int64(i64),
    Bool(bool),
    /// Distribution, string or missing values: not used by the agent.
    Other,
}

impl PointValue {
    /// The value as a float (integers converted); `None` for non-numeric values.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PointValue::Double(d) => Some(*d),
            PointValue::Int64(i) => Some(*i as f64),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// `interval.endTime`, Unix seconds.
    pub end_time: i64,
    pub value: PointValue,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimeSeries {
    pub metric_type: String,
    pub metric_labels: Value,
    pub resource_labels: Value,
    /// Newest first, as the API returns them.
    pub points: Vec<Point>,
}

impl TimeSeries {
    pub fn latest(&self) -> Option<&Point> {
        self.points.first()
    }
}

fn parse_value(v: &Value) -> PointValue {
    if let Some(d) = v.get("doubleValue") {
        // Non-finite doubles arrive as the strings "NaN" / "Infinity".
        return match d {
            Value::Number(n) => n
                .as_f64()
                .map(PointValue::Double)
                .unwrap_or(PointValue::Other),
            Value::String(s) => s
                .parse()
                .map(PointValue::Double)
                .unwrap_or(PointValue::Other),
            _ => PointValue::Other,
        };
    }
    if let Some(i) = v.get("int64Value") {
        return match i {
            Value::String(s) => s
                .parse()
                .map(PointValue::Int64)
                .unwrap_or(PointValue::Other),
            Value::Number(n) => n
                .as_i64()
                .map(PointValue::Int64)
                .unwrap_or(PointValue::Other),
            _ => PointValue::Other,
        };
    }
    match v.get("boolValue").and_then(Value::as_bool) {
        Some(b) => PointValue::Bool(b),
        None => PointValue::Other,
    }
}

/// Parses one page's `timeSeries` array.
pub fn parse_series(page: &Value) -> Result<Vec<TimeSeries>> {
    let Some(items) = page.get("timeSeries") else {
        return Ok(Vec::new()); // an empty result omits the field
    };
    let items = items.as_array().ok_or_else(|| {
        CloudError::decode(
            "Cloud Monitoring timeSeries.list",
            "timeSeries is not an array",
        )
    })?;
    Ok(items
        .iter()
        .map(|ts| TimeSeries {
            metric_type: ts["metric"]["type"].as_str().unwrap_or("").to_string(),
            metric_labels: ts["metric"]["labels"].clone(),
            resource_labels: ts["resource"]["labels"].clone(),
            points: ts["points"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| Point {
                            end_time: p["interval"]["endTime"]
                                .as_str()
                                .and_then(crate::cloud::time::parse_rfc3339)
                                .unwrap_or(0),
                            value: parse_value(&p["value"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

impl Google {
    /// `GET /v3/projects/{project}/timeSeries?filter=…&interval.startTime=…&interval.endTime=…&view=FULL`,
    /// following `nextPageToken` up to `max_pages` pages.
    pub fn time_series_list(
        &self,
        project: &str,
        filter: &str,
        start: i64,
        end: i64,
        max_pages: usize,
    ) -> Result<Vec<TimeSeries>> {
        let base = format!(
            "{}/v3/projects/{}/timeSeries?filter={}&interval.startTime={}&interval.endTime={}&view=FULL",
            self.monitoring_base,
            uri_encode(project, false),
            uri_encode(filter, false),
            uri_encode(&rfc3339(start), false),
            uri_encode(&rfc3339(end), false)
        );
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..max_pages.max(1) {
            let url = match &token {
                Some(t) => format!("{base}&pageToken={}", uri_encode(t, false)),
                None => base.clone(),
            };
            let page = self.get_json(&url, "Cloud Monitoring timeSeries.list")?;
            out.extend(parse_series(&page)?);
            token = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int64_values_are_strings_and_points_stay_newest_first() {
        let page = json!({"timeSeries": [{
        "metric": {"type": "cloudsql.googleapis.com/database/memory/quota", "labels": {}},
        "resource": {"type": "cloudsql_database", "labels": {"database_id": "p:i"}},
        "points": [
            {"interval": {"endTime": "2025-01-01T00:01:00Z"}, "value": {"int64Value": "4294967296"}},
            {"interval": {"endTime": "2025-01-01T00:00:00Z"}, "value": {"int64Value": "1"}}
        ]}]});
        let s = parse_series(&page).unwrap();
        assert_eq!(
            s[0].latest().unwrap().value,
            PointValue::Int64(4_294_967_296)
        );
        assert_eq!(s[0].points[1].end_time + 60, s[0].points[0].end_time);
        assert_eq!(
            parse_value(&json!({"doubleValue": 0.25})).as_f64(),
            Some(0.25)
        );
        assert_eq!(
            parse_value(&json!({"doubleValue": "NaN"}))
                .as_f64()
                .map(f64::is_nan),
            Some(true)
        );
        assert!(parse_series(&json!({})).unwrap().is_empty());
    }
}
