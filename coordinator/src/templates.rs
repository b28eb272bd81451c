//! Task templates: the repository's `templates/<name>/` directories, built into the binary (so an
//! installed coordinator serves them with no files beside it), parsed once, and rendered into
//! submission bodies with a submitter's parameters.
//!
//! A template's `template.json` holds its [`TemplateInfo`] fields and `submission`, a body for
//! `POST /api/v1/tasks` with placeholders, each a whole JSON string:
//! - `"{{base64:FILE}}"`: the bytes of `FILE` in the template's directory, in base64 (the
//!   artefact goes inline: `wasm_module`, `kernel_base64`, `model_base64`). Parameter defaults
//!   may use it too (the photo filter's default image).
//! - `"{{NAME}}"`: the value of parameter `NAME`, of the JSON type of its default, so numbers
//!   stay numbers.
//!
//! A rendered template is only a body: [`crate::submission`] checks it when it is submitted, like
//! any other. Rendering submits nothing.

use std::sync::OnceLock;

use ambient_protocol::{TaskSubmission, TemplateInfo, TemplateParam};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// One template directory as built in: its manifest and the files its placeholders name.
struct Bundled {
    dir: &'static str,
    manifest: &'static str,
    files: &'static [(&'static str, &'static [u8])],
}

/// `bundled!("dir", ["file", ...])`: `templates/dir/template.json` and the files, embedded.
macro_rules! bundled {
    ($dir:literal, [$($file:literal),* $(,)?]) => {
        Bundled {
            dir: $dir,
            manifest: include_str!(concat!("../../templates/", $dir, "/template.json")),
            files: &[$(($file, include_bytes!(concat!("../../templates/", $dir, "/", $file)))),*],
        }
    };
}

/// Every template, in the order they are listed. A directory under `templates/` that is not
/// here fails the tests, and so does a file here that no placeholder names.
const BUNDLED: &[Bundled] = &[
    bundled!("pi", ["pi.wasm"]),
    bundled!("photo-filter", ["filter.wasm", "sample.ppm"]),
    bundled!("onnx-mlp", ["mlp.onnx"]),
    bundled!("zk-hash-chain", []),
    bundled!("federated", []),
];

/// A built-in template that does not hold together (a test catches it before a release).
#[derive(Debug, thiserror::Error)]
#[error("templates/{dir}/template.json: {message}")]
pub struct BundleError {
    dir: &'static str,
    message: String,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No template has that name.
    #[error("no template {name:?}; the templates are {}", .known.join(", "))]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The templates there are.
        known: Vec<String>,
    },
    /// The template has no such parameter.
    #[error("template {template} has no parameter {param:?}; its parameters are {}", .known.join(", "))]
    UnknownParam {
        /// The template.
        template: String,
        /// The parameter given.
        param: String,
        /// The template's parameters.
        known: Vec<String>,
    },
    /// A value of the wrong type for its parameter.
    #[error("parameter {param} of template {template} must be {expected}, not {got}")]
    InvalidParam {
        /// The template.
        template: String,
        /// The parameter.
        param: String,
        /// What it takes, e.g. `an integer`.
        expected: &'static str,
        /// The value given, shortened.
        got: String,
    },
}

impl RenderError {
    /// The API error code: `unknown_template` (404) or `invalid_template_param` (400).
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::UnknownTemplate { .. } => "unknown_template",
            RenderError::UnknownParam { .. } | RenderError::InvalidParam { .. } => {
                "invalid_template_param"
            }
        }
    }
}

/// The JSON type a parameter takes: its default's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    String,
    Bool,
    Array,
    Object,
    /// A `null` default: any value.
    Any,
}

impl Kind {
    fn of(default: &Value) -> Kind {
        match default {
            Value::Number(n) if n.is_f64() => Kind::Number,
            Value::Number(_) => Kind::Integer,
            Value::String(_) => Kind::String,
            Value::Bool(_) => Kind::Bool,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
            Value::Null => Kind::Any,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::String => "a string (or an integer, taken as its decimal text)",
            Kind::Bool => "true or false",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Any => "a JSON value",
        }
    }

    /// `value` as this kind, or None when it is not one. A number with an integral value
    /// (`1e9` arrives as a float) is an integer; an integer is also a string, in decimal.
    fn coerce(self, value: &Value) -> Option<Value> {
        match (self, value) {
            (Kind::Integer, Value::Number(n)) => integral(n).map(Value::Number),
            (Kind::Number, Value::Number(_))
            | (Kind::String, Value::String(_))
            | (Kind::Bool, Value::Bool(_))
            | (Kind::Array, Value::Array(_))
            | (Kind::Object, Value::Object(_))
            | (Kind::Any, _) => Some(value.clone()),
            (Kind::String, Value::Number(n)) => integral(n).map(|n| Value::String(n.to_string())),
            _ => None,
        }
    }
}

/// `n` as an integer (u64 or i64) when its value is one.
fn integral(n: &Number) -> Option<Number> {
    if n.is_u64() || n.is_i64() {
        return Some(n.clone());
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 {
        return None;
    }
    // Exact: an integral f64 in range converts without rounding.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(Number::from(f as u64))
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some(Number::from(f as i64))
    } else {
        None
    }
}

/// A value as an error message shows it: its JSON, cut to 60 characters.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// `template.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    title: String,
    description: String,
    task_type: ambient_protocol::TaskType,
    params: Vec<TemplateParam>,
    submission: Value,
    expected_output: String,
    source: String,
    build: String,
}

/// One parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    info: TemplateInfo,
    /// The body, artefacts inline, parameter placeholders left in.
    submission: Value,
    kinds: Vec<Kind>,
}

/// The placeholder a whole JSON string is, if it is one: `{{inner}}`.
fn placeholder(s: &str) -> Option<&str> {
    s.strip_prefix("{{")?.strip_suffix("}}")
}

/// Replaces every `{{base64:FILE}}` under `value` with the file in base64, and marks it used.
fn inline_files(value: &mut Value, b: &Bundled, used: &mut [bool]) -> Result<(), String> {
    match value {
        Value::String(s) => {
            if let Some(file) = placeholder(s).and_then(|p| p.strip_prefix("base64:")) {
                let i = b
                    .files
                    .iter()
                    .position(|(name, _)| *name == file)
                    .ok_or_else(|| {
                        format!("{{{{base64:{file}}}}} names a file the template does not bundle")
                    })?;
                used[i] = true;
                *s = base64::engine::general_purpose::STANDARD.encode(b.files[i].1);
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|v| inline_files(v, b, used)),
        Value::Object(m) => m.values_mut().try_for_each(|v| inline_files(v, b, used)),
        _ => Ok(()),
    }
}

/// Every `{{NAME}}` parameter placeholder under `value`.
fn param_placeholders<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.extend(placeholder(s)),
        Value::Array(a) => a.iter().for_each(|v| param_placeholders(v, out)),
        Value::Object(m) => m.values().for_each(|v| param_placeholders(v, out)),
        _ => {}
    }
}

/// Replaces every `{{NAME}}` under `value` with `values[NAME]`.
fn substitute(value: &mut Value, values: &Map<String, Value>) {
    match value {
        Value::String(s) => {
            if let Some(v) = placeholder(s).and_then(|name| values.get(name)) {
                *value = v.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| substitute(v, values)),
        Value::Object(m) => m.values_mut().for_each(|v| substitute(v, values)),
        _ => {}
    }
}

impl Template {
    fn parse(b: &Bundled) -> Result<Template, BundleError> {
        let bad = |message: String| BundleError {
            dir: b.dir,
            message,
        };
        let mut m: Manifest = serde_json::from_str(b.manifest).map_err(|e| bad(e.to_string()))?;
        if m.name != b.dir {
            return Err(bad(format!("name {:?} is not the directory's", m.name)));
        }
        let mut used = vec![false; b.files.len()];
        inline_files(&mut m.submission, b, &mut used).map_err(bad)?;
        for p in &mut m.params {
            inline_files(&mut p.default, b, &mut used).map_err(bad)?;
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(bad(format!(
                "bundles {} but no placeholder names it",
                b.files[i].0
            )));
        }
        let mut names = Vec::new();
        for p in &m.params {
            let ok_name = !p.name.is_empty()
                && p.name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
            if !ok_name || names.contains(&p.name.as_str()) {
                return Err(bad(format!(
                    "parameter name {:?} is invalid or repeated",
                    p.name
                )));
            }
            names.push(&p.name);
        }
        let mut placeholders = Vec::new();
        param_placeholders(&m.submission, &mut placeholders);
        if let Some(p) = placeholders.iter().find(|p| !names.contains(p)) {
            return Err(bad(format!("{{{{{p}}}}} names no parameter")));
        }
        if let Some(p) = names.iter().find(|n| !placeholders.contains(n)) {
            return Err(bad(format!(
                "parameter {p} is used nowhere in the submission"
            )));
        }
        if m.submission["task_type"] != m.task_type.as_str() {
            return Err(bad(format!(
                "the submission's task_type is not {}",
                m.task_type
            )));
        }
        let template = Template {
            kinds: m.params.iter().map(|p| Kind::of(&p.default)).collect(),
            info: TemplateInfo {
                name: m.name,
                title: m.title,
                description: m.description,
                task_type: m.task_type,
                params: m.params,
                expected_output: m.expected_output,
                source: m.source,
                build: m.build,
            },
            submission: m.submission,
        };
        // With its defaults it renders to a body of the submission's shape.
        let body = template
            .render(&Map::new())
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_value::<TaskSubmission>(body)
            .map_err(|e| bad(format!("the rendered submission: {e}")))?;
        Ok(template)
    }

    /// What `GET /api/v1/templates` says about it.
    pub fn info(&self) -> &TemplateInfo {
        &self.info
    }

    /// The submission body with `set`'s values and the other parameters' defaults.
    pub fn render(&self, set: &Map<String, Value>) -> Result<Value, RenderError> {
        let params = &self.info.params;
        for name in set.keys() {
            if !params.iter().any(|p| &p.name == name) {
                return Err(RenderError::UnknownParam {
                    template: self.info.name.clone(),
                    param: name.clone(),
                    known: params.iter().map(|p| p.name.clone()).collect(),
                });
            }
        }
        let mut values = Map::new();
        for (p, kind) in params.iter().zip(&self.kinds) {
            let value = match set.get(&p.name) {
                None => p.default.clone(),
                Some(v) => kind.coerce(v).ok_or_else(|| RenderError::InvalidParam {
                    template: self.info.name.clone(),
                    param: p.name.clone(),
                    expected: kind.expected(),
                    got: shown(v),
                })?,
            };
            values.insert(p.name.clone(), value);
        }
        let mut body = self.submission.clone();
        substitute(&mut body, &values);
        Ok(body)
    }
}

/// The built-in templates, parsed.
#[derive(Debug)]
pub struct Templates {
    list: Vec<Template>,
}

impl Templates {
    /// The templates built into this binary, parsed at first use.
    pub fn bundled() -> Result<&'static Templates, &'static BundleError> {
        static PARSED: OnceLock<Result<Templates, BundleError>> = OnceLock::new();
        PARSED
            .get_or_init(|| {
                let list = BUNDLED
                    .iter()
                    .map(Template::parse)
                    .collect::<Result<_, _>>()?;
                Ok(Templates { list })
            })
            .as_ref()
    }

    /// Every template, in listing order.
    pub fn list(&self) -> &[Template] {
        &self.list
    }

    /// The template called `name`.
    pub fn get(&self, name: &str) -> Result<&Template, RenderError> {
        self.list
            .iter()
            .find(|t| t.info.name == name)
            .ok_or_else(|| RenderError::UnknownTemplate {
                name: name.to_string(),
                known: self.list.iter().map(|t| t.info.name.clone()).collect(),
            })
    }

    /// Renders template `name` with `set` ([`Template::render`]).
    pub fn render(&self, name: &str, set: &Map<String, Value>) -> Result<Value, RenderError> {
        self.get(name)?.render(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates() -> &'static Templates {
        Templates::bundled().unwrap_or_else(|e| panic!("{e}"))
    }

    fn set(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn b64(s: &Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap()
    }

    fn repo_file(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every directory under templates/ is built in, and every built-in template parses and
    /// renders with its defaults to a submission of its own kind.
    #[test]
    fn every_template_directory_is_bundled_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut bundled: Vec<String> = templates()
            .list()
            .iter()
            .map(|t| t.info().name.clone())
            .collect();
        bundled.sort();
        assert_eq!(on_disk, bundled);
        for t in templates().list() {
            let body: TaskSubmission =
                serde_json::from_value(t.render(&Map::new()).unwrap()).unwrap();
            assert_eq!(body.task_type, t.info().task_type, "{}", t.info().name);
            for path in t.info().source.split(", ") {
                assert!(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("..")
                        .join(path)
                        .exists(),
                    "{}: source {path} does not exist",
                    t.info().name
                );
            }
        }
    }

    /// Defaults fill every placeholder, with their JSON types, and artefacts go inline.
    #[test]
    fn defaults_render_typed_with_artefacts_inline() {
        let body = templates().render("pi", &Map::new()).unwrap();
        assert_eq!(
            body["inputs"]["range"],
            json!({"start": 0, "end": 100_000_000, "shards": 16})
        );
        assert_eq!(
            b64(&body["inputs"]["kernel_base64"]),
            repo_file("templates/pi/pi.wasm")
        );
        let body = templates().render("photo-filter", &Map::new()).unwrap();
        assert_eq!(
            b64(&body["wasm_module"]),
            repo_file("templates/photo-filter/filter.wasm")
        );
        assert_eq!(
            b64(&body["inputs"]["image"]),
            repo_file("templates/photo-filter/sample.ppm")
        );
        assert_eq!(body["inputs"]["filter"], "edge");
        let body = templates().render("onnx-mlp", &Map::new()).unwrap();
        assert_eq!(
            b64(&body["inputs"]["model_base64"]),
            repo_file("templates/onnx-mlp/mlp.onnx")
        );
        assert_eq!(
            body["inputs"]["tensors"]["x"]["data"],
            json!([0.5, -1.0, 2.0, 0.25])
        );
        let body = templates().render("zk-hash-chain", &Map::new()).unwrap();
        assert_eq!(
            body["inputs"],
            json!({"circuit": "hash_chain", "x": "7", "n": 64})
        );
        let body = templates().render("federated", &Map::new()).unwrap();
        assert_eq!(body["requirements"]["min_nodes"], 3);
        // The listed default is the inlined value, not the placeholder.
        let image = &templates().get("photo-filter").unwrap().info().params[0];
        assert_eq!(
            b64(&image.default),
            repo_file("templates/photo-filter/sample.ppm")
        );
    }

    /// Overrides replace defaults; `1e9` is an integer for an integer parameter, and an integer
    /// is a string for a string parameter.
    #[test]
    fn overrides_are_coerced_to_the_parameters_types() {
        let body = templates()
            .render("pi", &set(json!({"samples": 1e9, "shards": 64})))
            .unwrap();
        assert_eq!(body["inputs"]["range"]["end"], json!(1_000_000_000u64));
        assert!(body["inputs"]["range"]["end"].is_u64());
        assert_eq!(body["inputs"]["range"]["shards"], json!(64));
        let body = templates()
            .render("zk-hash-chain", &set(json!({"x": 12345})))
            .unwrap();
        assert_eq!(body["inputs"]["x"], "12345");
        let body = templates()
            .render("onnx-mlp", &set(json!({"x": [1, 2, 3, 4]})))
            .unwrap();
        assert_eq!(body["inputs"]["tensors"]["x"]["data"], json!([1, 2, 3, 4]));
        let body = templates()
            .render(
                "photo-filter",
                &set(json!({"filter": "blur", "image": "UDUK"})),
            )
            .unwrap();
        assert_eq!(body["inputs"], json!({"filter": "blur", "image": "UDUK"}));
    }

    #[test]
    fn unknown_and_mistyped_parameters_are_refused_by_name() {
        let e = templates()
            .render("pi", &set(json!({"sample": 10})))
            .unwrap_err();
        assert_eq!(e.code(), "invalid_template_param");
        assert_eq!(
            e.to_string(),
            "template pi has no parameter \"sample\"; its parameters are samples, shards"
        );
        for bad in [json!(1.5), json!("many"), json!(-1e300), json!(null)] {
            let e = templates()
                .render("pi", &set(json!({"samples": bad})))
                .unwrap_err();
            assert!(
                matches!(&e, RenderError::InvalidParam { param, expected: "an integer", .. }
                    if param == "samples"),
                "{e}"
            );
        }
        let e = templates()
            .render("zk-hash-chain", &set(json!({"x": 0.5})))
            .unwrap_err();
        assert_eq!(e.code(), "invalid_template_param");
        let e = templates()
            .render("onnx-mlp", &set(json!({"x": "0.5"})))
            .unwrap_err();
        assert!(e.to_string().contains("must be an array"), "{e}");
        let e = templates().render("mandelbrot", &Map::new()).unwrap_err();
        assert_eq!(e.code(), "unknown_template");
        assert!(e.to_string().contains("pi, photo-filter, onnx-mlp"), "{e}");
    }

    #[test]
    fn integral_numbers_convert_exactly() {
        let n = |v: Value| match v {
            Value::Number(n) => integral(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(json!(1e9)), Some(Number::from(1_000_000_000u64)));
        assert_eq!(n(json!(-3.0)), Some(Number::from(-3i64)));
        assert_eq!(
            n(json!(1e19)),
            Some(Number::from(10_000_000_000_000_000_000u64))
        );
        assert_eq!(n(json!(1e20)), None);
        assert_eq!(n(json!(2.5)), None);
        assert_eq!(n(json!(u64::MAX)), Some(Number::from(u64::MAX)));
    }

    /// A manifest that does not hold together is refused with what is wrong.
    #[test]
    fn broken_manifests_are_refused() {
        let manifest = |params: &str, submission: &str| {
            format!(
                r#"{{"name": "t", "title": "", "description": "", "task_type": "wasm_execution",
                    "params": {params}, "submission": {submission}, "expected_output": "",
                    "source": "", "build": ""}}"#
            )
        };
        let check =
            |params: &str, submission: &str, files: &'static [(&'static str, &'static [u8])]| {
                let text: &'static str = Box::leak(manifest(params, submission).into_boxed_str());
                Template::parse(&Bundled {
                    dir: "t",
                    manifest: text,
                    files,
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
            };
        let ok_body = r#"{"task_type": "wasm_execution", "wasm_module": "{{base64:m}}", "inputs": {"n": "{{n}}"}}"#;
        let param = r#"[{"name": "n", "description": "", "default": 1}]"#;
        const M: &[u8] = b"\0asm";
        assert_eq!(check(param, ok_body, &[("m", M)]), Ok(()));
        let e = check("[]", ok_body, &[("m", M)]).unwrap_err();
        assert!(e.contains("{{n}} names no parameter"), "{e}");
        let e = check(param, ok_body, &[]).unwrap_err();
        assert!(
            e.contains("names a file the template does not bundle"),
            "{e}"
        );
        let e = check(param, ok_body, &[("m", M), ("extra", M)]).unwrap_err();
        assert!(e.contains("bundles extra"), "{e}");
        let two = r#"[{"name": "n", "description": "", "default": 1}, {"name": "k", "description": "", "default": 1}]"#;
        let e = check(two, ok_body, &[("m", M)]).unwrap_err();
        assert!(e.contains("parameter k is used nowhere"), "{e}");
        let e = check(
            param,
            r#"{"task_type": "inference", "inputs": {"n": "{{n}}"}}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.contains("task_type is not wasm_execution"), "{e}");
    }
}
