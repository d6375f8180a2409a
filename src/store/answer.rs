//! The query API's JSON answer (`/api/v1/query`), as typed samples.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The largest answer read (a whole site's series are a few hundred kB).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// One series of an instant vector: its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The label's value, or "" when absent (as PromQL treats it).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Why an answer could not be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("not a query API answer: {0}")]
    Json(String),
    /// `{"status":"error"}`: the store's own words.
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
    #[error("expected an instant vector, got a {0}")]
    NotVector(String),
    #[error("a sample value `{0}` is not a number")]
    Value(String),
}

#[derive(Deserialize)]
struct Raw {
    status: String,
    data: Option<RawData>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

/// The samples of an instant-vector answer, or the store's error.
pub fn parse(body: &[u8]) -> Result<Vec<Sample>, AnswerError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| AnswerError::Json(e.to_string()))?;
    if raw.status != "success" {
        return Err(AnswerError::Api {
            kind: raw.error_type.unwrap_or_else(|| raw.status.clone()),
            message: raw.error.unwrap_or_default(),
        });
    }
    let data = raw
        .data
        .ok_or_else(|| AnswerError::Json("no `data`".into()))?;
    if data.result_type != "vector" {
        return Err(AnswerError::NotVector(data.result_type));
    }
    let samples: Vec<RawSample> =
        serde_json::from_value(data.result).map_err(|e| AnswerError::Json(e.to_string()))?;
    samples
        .into_iter()
        .map(|s| {
            let value = s
                .value
                .1
                .parse::<f64>()
                .map_err(|_| AnswerError::Value(s.value.1.clone()))?;
            Ok(Sample {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_answer_gives_its_samples() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"site":"a","src":"x"},"value":[1700000000.5,"1"]},
            {"metric":{},"value":[1700000000,"NaN"]}]}}"#;
        let s = parse(body).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].label("src"), s[0].value), ("x", 1.0));
        assert_eq!(s[0].label("dst"), "");
        assert!(s[1].value.is_nan());
    }

    #[test]
    fn an_error_answer_says_what_the_store_said() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse(body).unwrap_err().to_string(),
            "bad_data: parse error at char 3"
        );
    }

    #[test]
    fn other_shapes_are_errors_not_panics() {
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(parse(scalar), Err(AnswerError::NotVector("scalar".into())));
        let bad = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}"#;
        assert_eq!(parse(bad), Err(AnswerError::Value("x".into())));
        for junk in [&b"<html>"[..], b"{}", b"[]", b""] {
            assert!(matches!(parse(junk), Err(AnswerError::Json(_))));
        }
    }
}
