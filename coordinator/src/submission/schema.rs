//! A submission's shape, checked against the OpenAPI document the coordinator serves
//! (`coordinator/openapi.json`), so that a refused body hears of every field to add or change at
//! once, in the words of the document that also describes the API to its users.
//!
//! [`diagnose`] walks the body with the schema of its `task_type` and returns a
//! [`FieldProblem`] for each field that is missing, unknown (with the nearest known name), of the
//! wrong type, or not allowed, each with what was expected and an example taken from the
//! document. It knows the part of JSON Schema the document uses: `$ref`, `type`, `const`, `enum`,
//! `required`, `properties`, `additionalProperties`, `minProperties`, `items`, `minItems`,
//! `maxItems`, `minimum`, `maximum`, `allOf`, `oneOf`, and the formats `uuid` and `byte`
//! (base64). It does not match `pattern`: what a pattern says (a field element's digits, a
//! sha256) the kinds' checks that run after it refuse, one value at a time.
//!
//! The document is therefore part of the submission check: a field added to a kind must be
//! added to its schema, or every body that uses it is refused as `unknown`. The unit tests below
//! submit a full example of every kind, and the e2e tests and schemathesis submit the rest.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use ambient_protocol::{FieldProblem, ProblemKind, TaskType};
use serde_json::{Map, Value};

/// The parsed OpenAPI document.
static DOC: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(crate::api::OPENAPI).expect("openapi.json is JSON (a unit test checks)")
});

/// Most problems one answer lists; past it, the answer says how many more there were.
pub const MAX_LISTED: usize = 50;

/// Most problems looked for among the items of one array (a tensor's data, say): one bad value
/// of many is enough to say what is wrong, and a body of millions of bad values would otherwise
/// make millions of problems.
const MAX_PER_ARRAY: usize = 3;

/// Every field problem of a refused submission, for [`crate::submission::SubmitError`].
#[derive(Debug, Clone, PartialEq)]
pub struct Problems {
    /// The task type, when the body named a known one.
    pub task_type: Option<TaskType>,
    /// The problems, one per field, ordered by field, at most [`MAX_LISTED`].
    pub list: Vec<FieldProblem>,
    /// How many more were found than `list` holds.
    pub more: usize,
}

impl Problems {
    /// Adds `found` to the list: one problem per field (the first found), ordered by field, at
    /// most [`MAX_LISTED`] kept.
    pub fn add(&mut self, found: impl IntoIterator<Item = FieldProblem>) {
        let mut all = std::mem::take(&mut self.list);
        all.extend(found);
        let mut seen = BTreeSet::new();
        all.retain(|p| seen.insert(p.field.clone()));
        all.sort_by(|a, b| a.field.cmp(&b.field));
        self.more += all.len().saturating_sub(MAX_LISTED);
        all.truncate(MAX_LISTED);
        self.list = all;
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The stable code of the refusal: that of its first problem (`missing_module`,
    /// `invalid_inputs`, `invalid_requirements`, …), and `proof_unsupported` only when a proof
    /// that cannot be made is the only trouble.
    pub fn code(&self) -> &'static str {
        let mut codes = self.list.iter().map(code_of);
        codes
            .clone()
            .find(|c| *c != "proof_unsupported")
            .or_else(|| codes.next())
            .unwrap_or("invalid_json")
    }

    /// 422 for `proof_unsupported`, else 400.
    pub fn http_status(&self) -> u16 {
        if self.code() == "proof_unsupported" {
            422
        } else {
            400
        }
    }
}

fn code_of(p: &FieldProblem) -> &'static str {
    match (p.field.as_str(), p.problem) {
        ("wasm_module", ProblemKind::Missing) => "missing_module",
        ("wasm_module", ProblemKind::Invalid) => "invalid_base64",
        ("task_type", ProblemKind::Invalid) => "unknown_task_type",
        ("requirements.require_proof", ProblemKind::Invalid) => "proof_unsupported",
        (f, _) if f.starts_with("requirements") => "invalid_requirements",
        (f, _) if f.starts_with("inputs") || f == "wasm_module" => "invalid_inputs",
        _ => "invalid_json",
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.task_type.map_or_else(
            || "this submission".to_string(),
            |t| format!("this {t} task"),
        );
        match self.list.len() {
            1 => write!(f, "1 thing to fix in {what}:")?,
            n => write!(f, "{} things to fix in {what}:", n + self.more)?,
        }
        for p in &self.list {
            write!(f, "\n- {}", sentence(p))?;
        }
        if self.more > 0 {
            write!(f, "\n- and {} more not listed", self.more)?;
        }
        Ok(())
    }
}

/// One problem as a sentence: the field, what is wrong, what it must be, an example.
fn sentence(p: &FieldProblem) -> String {
    let head = match p.problem {
        ProblemKind::Missing => format!("{} is missing", p.field),
        ProblemKind::Unknown => {
            return match &p.example {
                Some(e) => format!(
                    "{} is unknown: {} (example: {})",
                    p.field,
                    p.expected,
                    short(e, 160)
                ),
                None => format!("{} is unknown: {}", p.field, p.expected),
            };
        }
        ProblemKind::WrongType => match &p.got {
            Some(got) => format!("{} is {got}, of the wrong type", p.field),
            None => format!("{} has the wrong type", p.field),
        },
        ProblemKind::Invalid => match &p.got {
            Some(got) => format!("{} = {got} is not allowed", p.field),
            None => format!("{} has a value that is not allowed", p.field),
        },
        ProblemKind::Conflict => format!("{}: give only one of these", p.field),
    };
    let mut s = format!("{head}; expected {}", p.expected);
    if let Some(e) = &p.example {
        s.push_str(&format!(" (example: {})", short(e, 160)));
    }
    s
}

/// Every field problem of `body` (a parsed JSON value) against the schema of its task type.
pub fn diagnose(body: &Value) -> Problems {
    let mut out = Vec::new();
    let task_type = body
        .get("task_type")
        .and_then(Value::as_str)
        .and_then(TaskType::from_wire);
    let known = TaskType::ALL
        .iter()
        .map(|t| format!("\"{}\"", t.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    match (body.as_object(), body.get("task_type")) {
        (None, _) => out.push(FieldProblem {
            field: "(body)".into(),
            problem: ProblemKind::WrongType,
            got: Some(short(body, 80)),
            expected: "a JSON object with task_type, inputs and requirements".into(),
            example: Some(serde_json::json!({"task_type": "wasm_execution",
                "wasm_module": "AGFzbQEAAAA=", "inputs": {}, "requirements": {"min_nodes": 1}})),
        }),
        (Some(_), None) => out.push(FieldProblem {
            field: "task_type".into(),
            problem: ProblemKind::Missing,
            got: None,
            expected: format!("the kind of work, one of {known}"),
            example: Some(Value::from("wasm_execution")),
        }),
        (Some(_), Some(t)) => match task_type.and_then(kind_schema) {
            Some(schema) => value(schema, body, "", &mut out),
            None => out.push(FieldProblem {
                field: "task_type".into(),
                got: Some(short(t, 80)),
                problem: if t.is_string() {
                    ProblemKind::Invalid
                } else {
                    ProblemKind::WrongType
                },
                expected: format!("the kind of work, one of {known}"),
                example: Some(Value::from("wasm_execution")),
            }),
        },
    }
    // One problem per field (an `allOf` can find the same field wrong twice), in field order.
    let mut problems = Problems {
        task_type,
        list: Vec::new(),
        more: 0,
    };
    problems.add(out);
    problems
}

/// The schema of one kind's submission: the branch of `TaskSubmission`'s `oneOf` whose
/// `task_type` is that kind.
fn kind_schema(t: TaskType) -> Option<&'static Value> {
    DOC.pointer("/components/schemas/TaskSubmission/oneOf")?
        .as_array()?
        .iter()
        .map(resolve)
        .find(|s| s.pointer("/properties/task_type/const") == Some(&Value::from(t.as_str())))
}

/// `schema`, or what its `$ref` points to.
fn resolve(schema: &Value) -> &Value {
    let doc: &'static Value = &DOC;
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| doc.pointer(p))
            .map_or(schema, resolve),
        None => schema,
    }
}

/// Checks `v` at `path` against `schema`, pushing its problems.
fn value(schema: &Value, v: &Value, path: &str, out: &mut Vec<FieldProblem>) {
    let schema = resolve(schema);
    let before = out.len();
    for part in list(schema, "allOf") {
        value(part, v, path, out);
    }
    if out.len() > before {
        return;
    }
    if let Some(t) = schema.get("type")
        && !type_matches(t, v)
    {
        out.push(problem(path, ProblemKind::WrongType, schema, Some(v)));
        return;
    }
    if let Some(c) = schema.get("const")
        && !same(c, v)
    {
        out.push(problem(path, ProblemKind::Invalid, schema, Some(v)));
        return;
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array)
        && !choices.iter().any(|c| same(c, v))
    {
        out.push(problem(path, ProblemKind::Invalid, schema, Some(v)));
        return;
    }
    match v {
        Value::Object(m) => object(schema, m, path, out),
        Value::Array(a) => {
            let n = a.len() as f64;
            if num(schema, "minItems").is_some_and(|min| n < min)
                || num(schema, "maxItems").is_some_and(|max| n > max)
            {
                out.push(problem(path, ProblemKind::Invalid, schema, Some(v)));
                return;
            }
            if let Some(items) = schema.get("items") {
                let start = out.len();
                for (k, item) in a.iter().enumerate() {
                    if out.len() - start >= MAX_PER_ARRAY {
                        break;
                    }
                    value(items, item, &format!("{path}[{k}]"), out);
                }
            }
        }
        Value::Number(x) => {
            let x = x.as_f64().unwrap_or(f64::NAN);
            if num(schema, "minimum").is_some_and(|min| x < min)
                || num(schema, "maximum").is_some_and(|max| x > max)
            {
                out.push(problem(path, ProblemKind::Invalid, schema, Some(v)));
            }
        }
        Value::String(s) => {
            let ok = match schema.get("format").and_then(Value::as_str) {
                Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
                Some("byte") => looks_like_base64(s.trim()),
                _ => true,
            };
            if !ok {
                out.push(problem(path, ProblemKind::Invalid, schema, Some(v)));
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        one_of(schema, branches, v, path, out);
    }
}

fn object(schema: &Value, m: &Map<String, Value>, path: &str, out: &mut Vec<FieldProblem>) {
    let props = schema.get("properties").and_then(Value::as_object);
    for name in list(schema, "required").filter_map(Value::as_str) {
        if !m.contains_key(name) {
            let field_schema = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
            out.push(problem(
                &join(path, name),
                ProblemKind::Missing,
                field_schema,
                None,
            ));
        }
    }
    if num(schema, "minProperties").is_some_and(|min| (m.len() as f64) < min) {
        out.push(problem(path, ProblemKind::Invalid, schema, None));
    }
    for (k, v) in m {
        let field = join(path, k);
        match (
            props.and_then(|p| p.get(k)),
            schema.get("additionalProperties"),
        ) {
            (Some(s), _) => value(s, v, &field, out),
            (None, Some(Value::Bool(false))) => out.push(unknown(&field, k, schema, path)),
            (None, Some(extra)) if extra.is_object() => value(extra, v, &field, out),
            (None, _) => {}
        }
    }
}

/// `oneOf`: exactly one branch must fit. When none does, the branch picked by a `const`
/// discriminator (`circuit`, `type`) speaks; else one problem names every choice.
fn one_of(schema: &Value, branches: &[Value], v: &Value, path: &str, out: &mut Vec<FieldProblem>) {
    let results: Vec<Vec<FieldProblem>> = branches
        .iter()
        .map(|b| {
            let mut o = Vec::new();
            value(b, v, path, &mut o);
            o
        })
        .collect();
    match results.iter().filter(|r| r.is_empty()).count() {
        1 => return,
        0 => {}
        _ => {
            out.push(problem(path, ProblemKind::Conflict, schema, Some(v)));
            return;
        }
    }
    // A discriminator: a property that is a `const` in every branch.
    let consts = |b: &Value| -> Vec<(String, Value)> {
        resolve(b)
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .filter_map(|(k, s)| s.get("const").map(|c| (k.clone(), c.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let disc = consts(&branches[0]).into_iter().map(|(k, _)| k).find(|k| {
        branches
            .iter()
            .all(|b| consts(b).iter().any(|(name, _)| name == k))
    });
    if let (Some(disc), Some(obj)) = (disc, v.as_object()) {
        let given = obj.get(&disc);
        if let Some(k) = branches.iter().position(|b| {
            consts(b)
                .iter()
                .any(|(name, c)| name == &disc && given.is_some_and(|g| same(c, g)))
        }) {
            out.extend(results[k].iter().cloned());
            return;
        }
        let choices: Vec<String> = branches
            .iter()
            .flat_map(consts)
            .filter(|(name, _)| name == &disc)
            .map(|(_, c)| c.to_string())
            .collect();
        out.push(FieldProblem {
            field: join(path, &disc),
            got: given.map(|g| short(g, 80)),
            problem: if given.is_some() {
                ProblemKind::Invalid
            } else {
                ProblemKind::Missing
            },
            expected: format!("one of {}", choices.join(", ")),
            example: example(schema),
        });
        return;
    }
    // Alternatives told apart by what they require (shards or range): name them together.
    let missing: Option<Vec<String>> = results
        .iter()
        .map(|r| match r.as_slice() {
            [p] if p.problem == ProblemKind::Missing => Some(p.field.clone()),
            _ => None,
        })
        .collect();
    match missing {
        Some(fields) => out.push(FieldProblem {
            field: fields.join(" or "),
            problem: ProblemKind::Missing,
            got: None,
            expected: expected(schema),
            example: example(schema),
        }),
        None => out.push(problem(path, ProblemKind::WrongType, schema, Some(v))),
    }
}

/// A problem at `path` whose expectation and example come from `schema`.
fn problem(path: &str, kind: ProblemKind, schema: &Value, got: Option<&Value>) -> FieldProblem {
    FieldProblem {
        field: if path.is_empty() {
            "(body)".into()
        } else {
            path.into()
        },
        problem: kind,
        got: got.map(|v| short(v, 80)),
        expected: expected(schema),
        example: example(schema),
    }
}

/// An unknown field `name` of the object at `parent` (whose schema is `schema`): the known
/// fields, the nearest of them, and what the object is for.
fn unknown(field: &str, name: &str, schema: &Value, parent: &str) -> FieldProblem {
    let known: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let nearest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    let whose = if parent.is_empty() {
        "a submission".to_string()
    } else {
        parent.to_string()
    };
    let mut expected = match nearest {
        Some(k) => format!("did you mean {k}? {whose} takes {}", known.join(", ")),
        None => format!("{whose} takes {}", known.join(", ")),
    };
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        expected.push_str(". ");
        expected.push_str(d);
    }
    FieldProblem {
        field: field.into(),
        problem: ProblemKind::Unknown,
        got: None,
        expected,
        example: nearest.and_then(|k| {
            schema
                .get("properties")
                .and_then(|p| p.get(k))
                .and_then(example)
        }),
    }
}

/// What `schema` asks for, in words: its type and range, then its description.
fn expected(schema: &Value) -> String {
    let schema = resolve(schema);
    let mut parts = Vec::new();
    if let Some(c) = schema.get("const") {
        parts.push(format!("exactly {c}"));
    } else if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let e: Vec<String> = e
            .iter()
            .filter(|c| !c.is_null())
            .map(Value::to_string)
            .collect();
        parts.push(format!("one of {}", e.join(", ")));
    } else if let Some(t) = schema.get("type") {
        let mut words = type_words(t);
        match (num(schema, "minimum"), num(schema, "maximum")) {
            (Some(lo), Some(hi)) => words.push_str(&format!(" from {lo} to {hi}")),
            (Some(lo), None) => words.push_str(&format!(" ≥ {lo}")),
            (None, Some(hi)) => words.push_str(&format!(" ≤ {hi}")),
            (None, None) => {}
        }
        match (num(schema, "minItems"), num(schema, "maxItems")) {
            (Some(lo), Some(hi)) if lo == hi => words.push_str(&format!(" of {lo} items")),
            (Some(lo), Some(hi)) => words.push_str(&format!(" of {lo} to {hi} items")),
            (Some(lo), None) => words.push_str(&format!(" of at least {lo} items")),
            (None, Some(hi)) => words.push_str(&format!(" of at most {hi} items")),
            (None, None) => {}
        }
        parts.push(words);
    }
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .or_else(|| {
            list(schema, "allOf")
                .find_map(|s| resolve(s).get("description").and_then(Value::as_str))
        });
    if let Some(d) = description {
        // "an integer: the data set …", but "{"type": …" as written.
        let mut d = d.to_string();
        if d.chars().nth(1).is_some_and(char::is_lowercase)
            && let Some(first) = d.get(..1)
        {
            d = first.to_lowercase() + &d[1..];
        }
        parts.push(d);
    }
    if parts.is_empty() {
        "a value".into()
    } else {
        parts.join(": ")
    }
}

fn type_words(t: &Value) -> String {
    let one = |t: &str| match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "object" => "an object",
        "array" => "an array",
        "null" => "null",
        _ => "a value",
    };
    match t {
        Value::String(t) => one(t).into(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value".into(),
    }
}

/// An example for `schema`: its first `examples`, else its `default`, else its `const`.
fn example(schema: &Value) -> Option<Value> {
    let schema = resolve(schema);
    schema
        .get("examples")
        .and_then(|e| e.get(0))
        .or_else(|| schema.get("default").filter(|d| !d.is_null()))
        .or_else(|| schema.get("const"))
        .or_else(|| list(schema, "allOf").find_map(|s| resolve(s).get("examples")?.get(0)))
        .cloned()
}

fn type_matches(t: &Value, v: &Value) -> bool {
    let one = |t: &str| match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    };
    match t {
        Value::String(t) => one(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(one),
        _ => true,
    }
}

/// JSON equality with numbers compared by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn list<'a>(schema: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    schema
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.into()
    } else {
        format!("{path}.{name}")
    }
}

/// Standard padded base64 by its alphabet and length, without decoding it (the module is decoded
/// once, by the kind's check, which also refuses non-canonical trailing bits).
fn looks_like_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// `v` as compact JSON, cut to about `max` characters.
fn short(v: &Value, max: usize) -> String {
    let s = v.to_string();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(body: Value) -> Vec<(String, ProblemKind)> {
        diagnose(&body)
            .list
            .into_iter()
            .map(|p| (p.field, p.problem))
            .collect()
    }

    #[test]
    fn every_kind_has_a_schema() {
        for t in TaskType::ALL {
            assert!(kind_schema(t).is_some(), "{t}");
        }
    }

    use ProblemKind::{Invalid, Missing, Unknown, WrongType};

    fn f(field: &str, kind: ProblemKind) -> (String, ProblemKind) {
        (field.to_string(), kind)
    }

    /// The examples of the seed's "Who creates tasks", as their submitters wrote them: each
    /// answer names every field to add or change.
    #[test]
    fn the_seeds_examples_hear_of_every_field() {
        // The photo app (JavaScript): a placeholder where the module goes.
        assert_eq!(
            fields(json!({"task_type": "wasm_execution",
                "wasm_module": "<base64-encoded-filter-algorithm>",
                "inputs": {"image": "<the user's image>"},
                "requirements": {"min_nodes": 1, "max_execution_time_sec": 30,
                                 "require_gpu": true, "require_proof": false}})),
            [f("wasm_module", Invalid)]
        );
        // The hospitals (Python): a model by name, no data set, a GPU and a proof.
        let hospital = json!({"task_type": "federated_learning",
            "inputs": {"model_name": "patient_diagnosis_v2", "rounds": 10, "epsilon": 1.0,
                       "delta": 0.001},
            "requirements": {"min_nodes": 5, "max_execution_time_sec": 3600,
                             "require_gpu": true, "require_proof": true}});
        assert_eq!(
            fields(hospital.clone()),
            [
                f("inputs.dataset", Missing),
                f("inputs.model_name", Unknown),
                f("requirements.require_gpu", Invalid),
                f("requirements.require_proof", Invalid),
            ]
        );
        let p = diagnose(&hospital);
        assert!(p.to_string().contains("did you mean model?"), "{p}");
        assert_eq!((p.code(), p.http_status()), ("invalid_inputs", 400));
        // The climate researchers (curl), with their `{...}` written as `{}`: parameters of
        // their own where a kernel and its shards go, and a proof.
        assert_eq!(
            fields(json!({"task_type": "computation",
                "inputs": {"simulation_params": {}, "scenario": "climate_2050_high_emissions"},
                "requirements": {"min_nodes": 10, "max_execution_time_sec": 1800,
                                 "require_gpu": false, "require_proof": true}})),
            [
                f("inputs.kernel_base64", Missing),
                f("inputs.scenario", Unknown),
                f("inputs.shards or inputs.range", Missing),
                f("inputs.simulation_params", Unknown),
                f("requirements.require_proof", Invalid),
            ]
        );
        // The bank consortium (Python): a model by name, and no data set.
        let fraud = json!({"task_type": "federated_learning",
            "inputs": {"model": "fraud_detection_v1"}, "requirements": {"min_nodes": 3}});
        assert_eq!(
            fields(fraud.clone()),
            [f("inputs.dataset", Missing), f("inputs.model", WrongType)]
        );
        let p = diagnose(&fraud);
        let model = &p.list[1];
        assert_eq!(model.got.as_deref(), Some("\"fraud_detection_v1\""));
        assert_eq!(model.example, Some(json!({"type": "logistic"})));
        assert!(model.expected.contains("\"mlp\""), "{}", model.expected);
    }

    #[test]
    fn choices_are_named() {
        // A discriminator that matches no branch.
        assert_eq!(
            fields(json!({"task_type": "zk_proof", "inputs": {"circuit": "sha", "x": "1"}})),
            [f("inputs.circuit", Invalid)]
        );
        // The branch the discriminator picks speaks.
        assert_eq!(
            fields(json!({"task_type": "zk_proof", "inputs": {"circuit": "hash_chain"}})),
            [f("inputs.n", Missing), f("inputs.x", Missing)]
        );
        assert_eq!(
            fields(json!({"task_type": "federated_learning",
                "inputs": {"dataset": "d", "model": {"type": "cnn"}}})),
            [f("inputs.model.type", Invalid)]
        );
        // Both alternatives given.
        assert_eq!(
            fields(json!({"task_type": "computation", "inputs": {
                "kernel_base64": "AGFzbQEAAAA=", "shards": [1],
                "range": {"start": 0, "end": 2, "shards": 2}}})),
            [f("inputs", ProblemKind::Conflict)]
        );
        assert_eq!(
            fields(json!({"task_type": "teleport"})),
            [f("task_type", Invalid)]
        );
        assert_eq!(fields(json!({})), [f("task_type", Missing)]);
        assert_eq!(fields(json!([1])), [f("(body)", WrongType)]);
        assert_eq!(
            fields(json!({"task_type": "inference", "inputs": {"tensors": {
                "x": {"dtype": "float32", "shape": [-1], "data": ["a"]}}}})),
            [
                f("inputs.model_sha256 or inputs.model_base64", Missing),
                f("inputs.tensors.x.data[0]", WrongType),
                f("inputs.tensors.x.shape[0]", Invalid),
            ]
        );
    }

    /// A body of a million bad values makes a bounded answer: a few problems per array, at most
    /// [`MAX_LISTED`] listed, the rest counted.
    #[test]
    fn answers_are_bounded() {
        let data = vec![true; 1_000_000];
        let p = diagnose(
            &json!({"task_type": "inference", "inputs": {"model_sha256": "a",
            "tensors": {"x": {"dtype": "float32", "shape": [1_000_000], "data": data}}}}),
        );
        assert_eq!(p.list.len(), MAX_PER_ARRAY, "{p}");
        let mut tensors = serde_json::Map::new();
        for k in 0..200 {
            tensors.insert(
                format!("t{k}"),
                json!({"dtype": "float32", "shape": [1], "data": "x"}),
            );
        }
        let p = diagnose(&json!({"task_type": "inference",
            "inputs": {"model_sha256": "a", "tensors": tensors}}));
        assert_eq!((p.list.len(), p.more), (MAX_LISTED, 150));
        assert!(
            p.to_string().starts_with("200 things to fix")
                && p.to_string().ends_with("and 150 more not listed"),
            "{p}"
        );
        assert!(
            looks_like_base64("AGFzbQEAAAA=")
                && !looks_like_base64("AGFzbQEAAAA")
                && !looks_like_base64("<b64>")
        );
    }

    /// Every field of every kind, as the document describes it, passes: the document and the
    /// types agree (a field missing from the document would be refused as unknown).
    #[test]
    fn full_bodies_of_every_kind_pass() {
        let wasm = "AGFzbQEAAAA=";
        for body in [
            json!({"task_type": "wasm_execution", "wasm_module": wasm, "inputs": {"a": [1]},
                   "requirements": {"min_nodes": 2, "max_execution_time_sec": 10,
                                    "require_gpu": false, "require_proof": false},
                   "task_id": "7f1f6f5e-2f51-4a8e-9a57-2f8f8f0c8a11"}),
            json!({"task_type": "computation", "wasm_module": null, "inputs": {
                   "kernel_base64": wasm, "range": {"start": 0, "end": 10, "shards": 2},
                   "reduce": "sum"}, "task_id": null}),
            json!({"task_type": "computation", "inputs": {"kernel_base64": wasm,
                   "shards": [{"a": 1}], "reduce": null}}),
            json!({"task_type": "inference", "inputs": {"model_sha256": "ab".repeat(32),
                   "model_base64": null,
                   "tensors": {"x": {"dtype": "float32", "shape": [1, 2], "data": [0.5, 1]}}},
                   "requirements": {"min_nodes": 1}}),
            json!({"task_type": "zk_proof", "inputs": {"circuit": "hash_chain", "x": "7", "n": 64},
                   "requirements": {"require_proof": true}}),
            json!({"task_type": "zk_proof", "inputs": {"circuit": "dot",
                   "a": vec![1; 16], "b": vec![-2; 16]}}),
            json!({"task_type": "federated_learning", "inputs": {
                   "dataset": "d", "model": {"type": "mlp", "hidden": [8, 4]}, "rounds": 3,
                   "local": {"epochs": 1, "batch_size": 8, "lr": 0.1, "l2": 0.0},
                   "server_lr": 1.0, "epsilon": 8.0, "delta": 1e-5, "clip_norm": 0.5,
                   "secure_aggregation": true, "round_timeout_sec": 30,
                   "eval_csv": "target,a\n1,0.5\n", "eval_label": "target", "seed": 7},
                   "requirements": {"min_nodes": 3}}),
            json!({"task_type": "federated_learning", "inputs": {"dataset": "d",
                   "model": {"type": "logistic"}, "epsilon": null, "secure_aggregation": null,
                   "eval_csv": null}, "requirements": {"min_nodes": 2}}),
        ] {
            let p = diagnose(&body);
            assert!(p.list.is_empty(), "{body}: {p}");
            serde_json::from_value::<ambient_protocol::TaskSubmission>(body.clone())
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            if body["task_type"] == "federated_learning" {
                serde_json::from_value::<ambient_fl::wire::JobSpec>(body["inputs"].clone())
                    .unwrap_or_else(|e| panic!("{body}: {e}"));
            }
        }
    }
}
