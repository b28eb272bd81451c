//! Task templates: ready-made submissions the coordinator serves (`GET /api/v1/templates`) and
//! fills in with a submitter's parameters (`POST /api/v1/templates/{name}/render`). A rendered
//! template is only a submission body: it is submitted like any other, and the submission checks
//! apply to it then.

use serde::{Deserialize, Serialize};

use crate::TaskType;

/// One template, as `GET /api/v1/templates` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInfo {
    /// Its name, as `render` and `ambient submit --template` take it (e.g. `pi`).
    pub name: String,
    /// A short title for people.
    pub title: String,
    /// What it does, and what it needs from the network.
    pub description: String,
    /// The kind of task it renders to.
    pub task_type: TaskType,
    /// What a submitter may set, each with its default.
    pub params: Vec<TemplateParam>,
    /// What a completed task's output looks like, as a sentence.
    pub expected_output: String,
    /// Where its source is in the project's repository (paths, comma-separated).
    pub source: String,
    /// How its artefact was built from that source, or why it has none.
    pub build: String,
}

/// A parameter of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateParam {
    /// Its name, as `set` takes it.
    pub name: String,
    /// What it means and which values it takes.
    pub description: String,
    /// The value used when it is not set. Its JSON type is the parameter's: a value given for an
    /// integer parameter must be an integer (`1e9` counts), for a string parameter a string (an
    /// integer is taken as its decimal text), and so on.
    pub default: serde_json::Value,
}

/// The body of `POST /api/v1/templates/{name}/render`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRender {
    /// Parameter values by name; parameters not named keep their defaults.
    #[serde(default)]
    pub set: serde_json::Map<String, serde_json::Value>,
}

/// The answer of `POST /api/v1/templates/{name}/render`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderedTemplate {
    /// The submission body for `POST /api/v1/tasks` (or the MQTT submit topic), with the
    /// template's artefact inline in base64. Rendering submits nothing.
    pub submission: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_render_request_may_omit_set_and_refuses_unknown_fields() {
        let r: TemplateRender = serde_json::from_str("{}").unwrap();
        assert!(r.set.is_empty());
        let r: TemplateRender = serde_json::from_str(r#"{"set": {"samples": 1e9}}"#).unwrap();
        assert_eq!(r.set["samples"].as_f64(), Some(1e9));
        assert!(serde_json::from_str::<TemplateRender>(r#"{"params": {}}"#).is_err());
    }
}
