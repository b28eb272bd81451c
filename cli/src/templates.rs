//! Task templates from the CLI: `ambient templates list`, `ambient templates show NAME`, and the
//! `--template NAME --set k=v` form of `ambient submit`, which has the coordinator render the
//! template (`POST /api/v1/templates/{name}/render`) and then submits the body as `submit` does.
//!
//! A `--set` value is JSON when it reads as JSON (`1e9`, `64`, `true`, `[0.5,1,2,3]`), and text
//! otherwise (`edge`); `@PATH` is the file's bytes in base64 (`--set image=@photo.ppm`). The
//! coordinator then holds each value to its parameter's type.

use std::path::PathBuf;

use ambient_protocol::{TemplateInfo, TemplateRender};
use base64::Engine as _;
use serde_json::Value;

use crate::client::{Client, ClientError};

/// One `--set NAME=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetArg {
    /// The parameter.
    pub name: String,
    /// Its value.
    pub value: SetValue,
}

/// A `--set` value.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    /// A value given on the command line.
    Json(Value),
    /// `@PATH`: the file's bytes, sent in base64.
    File(PathBuf),
}

/// Why a template could not be rendered from the command line.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A `--set @PATH` file could not be read.
    #[error("--set {name}=@{}: {source}", .path.display())]
    File {
        /// The parameter.
        name: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The coordinator refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The rendered body could not be written out (never for a body the coordinator sent).
    #[error("the rendered submission: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads `NAME=VALUE` (clap's value parser for `--set`).
pub fn parse_set(text: &str) -> Result<SetArg, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("{text:?}: no parameter name before '='"));
    }
    let value = match value.strip_prefix('@') {
        Some(path) if !path.is_empty() => SetValue::File(PathBuf::from(path)),
        _ => SetValue::Json(value_of(value)),
    };
    Ok(SetArg {
        name: name.to_string(),
        value,
    })
}

/// A command-line value as JSON: itself when it reads as JSON, else a string. An integer too
/// large for 64 bits stays a string of its digits, which JSON numbers here would round.
pub fn value_of(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Number(n)) if n.is_f64() && !text.contains(['.', 'e', 'E']) => {
            Value::String(text.to_string())
        }
        Ok(v) => v,
        Err(_) => Value::String(text.to_string()),
    }
}

/// The render request for `sets`, with `@PATH` files read and encoded.
pub fn render_request(sets: &[SetArg]) -> Result<TemplateRender, TemplateError> {
    let mut req = TemplateRender::default();
    for s in sets {
        let value = match &s.value {
            SetValue::Json(v) => v.clone(),
            SetValue::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| TemplateError::File {
                    name: s.name.clone(),
                    path: path.clone(),
                    source,
                })?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        };
        req.set.insert(s.name.clone(), value);
    }
    Ok(req)
}

/// Template `name` rendered by the coordinator with `sets`: a body for `POST /api/v1/tasks`.
pub async fn render(
    client: &Client,
    name: &str,
    sets: &[SetArg],
) -> Result<Vec<u8>, TemplateError> {
    let rendered = client.render_template(name, &render_request(sets)?).await?;
    Ok(serde_json::to_vec(&rendered.submission)?)
}

/// `ambient templates list`: one line per template.
pub fn list_table(templates: &[TemplateInfo]) -> String {
    let w = templates
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!("{:<w$}  {:<18}  title\n", "name", "task type");
    for t in templates {
        out.push_str(&format!(
            "{:<w$}  {:<18}  {}\n",
            t.name,
            t.task_type.as_str(),
            t.title
        ));
    }
    out
}

/// A default as `show` prints it: its JSON, with a long one cut (the photo filter's default
/// image is kilobytes of base64).
fn shown(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… ({} characters)", &text[..i], text.chars().count()),
        None => text,
    }
}

/// `ambient templates show NAME`: what it does, its parameters, expected output and source.
pub fn show_text(t: &TemplateInfo) -> String {
    let mut out = format!(
        "{} ({}): {}\n\n{}\n\nParameters (--set NAME=VALUE):\n",
        t.name,
        t.task_type.as_str(),
        t.title,
        t.description
    );
    if t.params.is_empty() {
        out.push_str("  none\n");
    }
    for p in &t.params {
        out.push_str(&format!(
            "  {} = {}\n      {}\n",
            p.name,
            shown(&p.default),
            p.description
        ));
    }
    out.push_str(&format!(
        "\nExpected output: {}\nSource: {}\nBuild: {}\n\nRun it: ambient submit --template {}",
        t.expected_output, t.source, t.build, t.name
    ));
    if let Some(p) = t.params.first() {
        out.push_str(&format!(" --set {}=…", p.name));
    }
    out.push('\n');
    out
}

/// The template called `name` among `templates`, or an error naming those there are.
pub fn find<'a>(templates: &'a [TemplateInfo], name: &str) -> Result<&'a TemplateInfo, String> {
    templates.iter().find(|t| t.name == name).ok_or_else(|| {
        let known: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
        format!(
            "no template {name:?}; the templates are {}",
            known.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_values_are_json_when_they_read_as_json() {
        let v = |s: &str| match parse_set(s).unwrap().value {
            SetValue::Json(v) => v,
            SetValue::File(p) => panic!("{s} read as a file {p:?}"),
        };
        assert_eq!(v("samples=1e9").as_f64(), Some(1e9));
        assert_eq!(v("shards=64"), json!(64));
        assert_eq!(v("filter=edge"), json!("edge"));
        assert_eq!(v("filter=\"edge\""), json!("edge"));
        assert_eq!(v("x=[0.5,-1,2,0.25]"), json!([0.5, -1, 2, 0.25]));
        assert_eq!(v("flag=true"), json!(true));
        assert_eq!(v("empty="), json!(""));
        // Too large for 64 bits: the digits, not a rounded float.
        assert_eq!(
            v("x=123456789012345678901234567890"),
            json!("123456789012345678901234567890")
        );
        // '=' inside the value stays in it.
        assert_eq!(v("q=a=b"), json!("a=b"));
        assert!(parse_set("samples").is_err());
        assert!(parse_set("=5").is_err());
    }

    #[test]
    fn at_path_sends_the_file_in_base64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.pgm");
        std::fs::write(&path, b"P5\n1 1\n255\n\x80").unwrap();
        let set = parse_set(&format!("image=@{}", path.display())).unwrap();
        assert_eq!(set.value, SetValue::File(path.clone()));
        let req = render_request(&[set, parse_set("filter=blur").unwrap()]).unwrap();
        assert_eq!(req.set["image"], json!("UDUKMSAxCjI1NQqA"));
        assert_eq!(req.set["filter"], json!("blur"));
        let missing = parse_set("image=@/nonexistent/file.ppm").unwrap();
        let e = render_request(&[missing]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--set image=@/nonexistent/file.ppm: "),
            "{e}"
        );
    }

    #[test]
    fn show_cuts_long_defaults_and_find_names_the_templates() {
        let t = TemplateInfo {
            name: "photo-filter".into(),
            title: "Photo filter".into(),
            description: "Filters.".into(),
            task_type: ambient_protocol::TaskType::WasmExecution,
            params: vec![ambient_protocol::TemplateParam {
                name: "image".into(),
                description: "The image.".into(),
                default: json!("A".repeat(1000)),
            }],
            expected_output: "An image.".into(),
            source: "templates/photo-filter/filter.c".into(),
            build: "build.sh".into(),
        };
        let text = show_text(&t);
        assert!(text.contains("… (1002 characters)"), "{text}");
        assert!(text.contains("Source: templates/photo-filter/filter.c"));
        assert!(text.contains("ambient submit --template photo-filter --set image=…"));
        let list = [t];
        assert!(list_table(&list).contains("photo-filter  wasm_execution      Photo filter"));
        assert_eq!(find(&list, "photo-filter").unwrap().name, "photo-filter");
        assert_eq!(
            find(&list, "pie").unwrap_err(),
            "no template \"pie\"; the templates are photo-filter"
        );
    }
}
