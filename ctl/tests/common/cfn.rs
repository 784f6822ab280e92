//! The CloudFormation templates (cfn/*.yaml) as the tests read them: parsed with their
//! short-form tags (`!Ref`, `!Sub`, ...), and an evaluator of the intrinsic functions they use,
//! given the values a stack would have (parameters, pseudo parameters, resource ids and
//! attributes). The tests render user-data and properties with it instead of writing them by
//! hand, so what they check is what CloudFormation would hand an instance.

use serde_yaml::Value;
use std::collections::BTreeMap;

/// A template, parsed.
pub struct Template {
    pub name: String,
    pub doc: Value,
}

pub fn load(name: &str) -> Template {
    let path = super::repo_root().join("cfn").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Template {
        name: name.to_string(),
        doc,
    }
}

pub fn templates() -> Vec<String> {
    let dir = super::repo_root().join("cfn");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    v
}

impl Template {
    pub fn section(&self, s: &str) -> &serde_yaml::Mapping {
        self.doc
            .get(s)
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{}: no {s} section", self.name))
    }
    /// Logical id -> resource (a `Fn::ForEach::` entry is kept as it is).
    pub fn resources(&self) -> BTreeMap<String, Value> {
        self.section("Resources")
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
            .collect()
    }
    pub fn resource(&self, id: &str) -> &Value {
        self.section("Resources")
            .get(id)
            .unwrap_or_else(|| panic!("{}: no resource {id}", self.name))
    }
    pub fn resources_of_type(&self, ty: &str) -> Vec<(String, Value)> {
        self.resources()
            .into_iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .collect()
    }
    pub fn parameter(&self, name: &str) -> &Value {
        self.section("Parameters")
            .get(name)
            .unwrap_or_else(|| panic!("{}: no parameter {name}", self.name))
    }
    /// Whether resource `id` exists in the stack: no `Condition`, or its condition is true.
    pub fn exists(&self, id: &str, s: &Stack) -> bool {
        match self.resource(id).get("Condition") {
            None => true,
            Some(c) => {
                let c = scalar(c);
                *s.conditions
                    .get(&c)
                    .unwrap_or_else(|| panic!("{}: {id}: no condition {c}", self.name))
            }
        }
    }
    /// A parameter's default as a string.
    pub fn default(&self, name: &str) -> String {
        scalar(
            self.parameter(name)
                .get("Default")
                .unwrap_or_else(|| panic!("{}: parameter {name} has no default", self.name)),
        )
    }
}

/// The values of a stack: parameters and pseudo parameters by name, resources' `Ref` values and
/// `Fn::GetAtt` values ("Logical.Attr").
#[derive(Default, Clone)]
pub struct Stack {
    pub values: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
}

impl Stack {
    /// A stack made from template `t` as `name` in `region`: every parameter's default, then
    /// `params` (`set` more afterwards), the pseudo parameters, and `Ref`/`GetAtt` of every
    /// resource as placeholders. Call [`Stack::finish`] after the last `set`.
    pub fn of(t: &Template, name: &str, region: &str, params: &[(&str, &str)]) -> Stack {
        let mut s = Stack::default();
        for (k, p) in t.section("Parameters") {
            if let Some(d) = p.get("Default") {
                s.set(&scalar(k), &scalar(d));
            }
        }
        for (k, v) in params {
            s.set(k, v);
        }
        s.set("AWS::Region", region)
            .set("AWS::URLSuffix", "amazonaws.com")
            .set("AWS::Partition", "aws")
            .set("AWS::AccountId", "123456789012")
            .set("AWS::StackName", name)
            .set(
                "AWS::StackId",
                &format!("arn:aws:cloudformation:{region}:123456789012:stack/{name}/1"),
            );
        for (id, _) in t.resources() {
            s.set(&id, &format!("ref:{id}"));
            for attr in [
                "Arn",
                "AvailabilityZone",
                "PrivateIp",
                "PrimaryPrivateIpAddress",
                "LatestVersionNumber",
            ] {
                s.set(&format!("{id}.{attr}"), &format!("{attr}:{id}"));
            }
            s.set(&format!("{id}.Endpoint.Address"), &format!("endpoint:{id}"));
        }
        s
    }

    /// Evaluates the template's conditions with the values set (after the last `set`).
    pub fn finish(mut self, t: &Template) -> Stack {
        self.conditions = conditions(t, &self);
        self
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.values
            .insert(k.to_string(), Value::String(v.to_string()));
        self
    }
    pub fn set_list(&mut self, k: &str, v: &[&str]) -> &mut Self {
        self.values.insert(
            k.to_string(),
            Value::Sequence(v.iter().map(|s| Value::String(s.to_string())).collect()),
        );
        self
    }
    fn get(&self, k: &str) -> Value {
        if k == "AWS::NoValue" {
            return Value::Null;
        }
        self.values
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("the test gives no value for {k}"))
    }
}

pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The function name and argument of an intrinsic (`!X arg` or `{"Fn::X": arg}` / `{"Ref":
/// arg}`), if `v` is one.
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let full = if name == "Ref" || name == "Condition" {
                name.to_string()
            } else {
                format!("Fn::{name}")
            };
            Some((full, &t.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, a) = m.iter().next().unwrap();
            let k = k.as_str()?;
            (k == "Ref" || (k.starts_with("Fn::") && !k.starts_with("Fn::ForEach")))
                .then(|| (k.to_string(), a))
        }
        _ => None,
    }
}

/// Evaluates every intrinsic function in `v`.
pub fn eval(v: &Value, s: &Stack) -> Value {
    if let Some((f, a)) = intrinsic(v) {
        return call(&f, a, s);
    }
    match v {
        Value::Sequence(xs) => Value::Sequence(
            xs.iter()
                .map(|x| eval(x, s))
                .filter(|x| !x.is_null())
                .collect(),
        ),
        Value::Mapping(m) => {
            let mut out = serde_yaml::Mapping::new();
            for (k, x) in m {
                let x = eval(x, s);
                if !x.is_null() {
                    out.insert(k.clone(), x);
                }
            }
            Value::Mapping(out)
        }
        Value::Tagged(_) => unreachable!(),
        other => other.clone(),
    }
}

pub fn eval_str(v: &Value, s: &Stack) -> String {
    scalar(&eval(v, s))
}

fn call(f: &str, a: &Value, s: &Stack) -> Value {
    let str_of = |v: &Value| eval_str(v, s);
    match f {
        "Ref" => s.get(&scalar(a)),
        "Fn::GetAtt" => {
            let key = match a {
                Value::String(x) => x.clone(),
                Value::Sequence(xs) => xs.iter().map(scalar).collect::<Vec<_>>().join("."),
                _ => panic!("GetAtt {a:?}"),
            };
            s.get(&key)
        }
        "Fn::Sub" => {
            let (text, vars) = match a {
                Value::String(t) => (t.clone(), BTreeMap::new()),
                Value::Sequence(xs) if xs.len() == 2 => {
                    let vars = xs[1]
                        .as_mapping()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (scalar(k), str_of(v)))
                                .collect::<BTreeMap<_, _>>()
                        })
                        .unwrap_or_default();
                    (scalar(&xs[0]), vars)
                }
                _ => panic!("Sub {a:?}"),
            };
            Value::String(sub(&text, &vars, s))
        }
        "Fn::Base64" => Value::String(str_of(a)),
        "Fn::Join" => {
            let xs = a.as_sequence().expect("Join [sep, list]");
            let sep = scalar(&xs[0]);
            let list = eval(&xs[1], s);
            Value::String(
                list.as_sequence()
                    .expect("Join list")
                    .iter()
                    .map(scalar)
                    .collect::<Vec<_>>()
                    .join(&sep),
            )
        }
        "Fn::Split" => {
            let xs = a.as_sequence().expect("Split [sep, text]");
            let sep = scalar(&xs[0]);
            Value::Sequence(
                str_of(&xs[1])
                    .split(sep.as_str())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )
        }
        "Fn::Select" => {
            let xs = a.as_sequence().expect("Select [i, list]");
            let i: usize = str_of(&xs[0]).parse().expect("Select index");
            eval(&xs[1], s).as_sequence().expect("Select list")[i].clone()
        }
        "Fn::If" => {
            let xs = a.as_sequence().expect("If [cond, a, b]");
            let c = scalar(&xs[0]);
            let yes = *s
                .conditions
                .get(&c)
                .unwrap_or_else(|| panic!("the test gives no value for condition {c}"));
            eval(&xs[if yes { 1 } else { 2 }], s)
        }
        "Fn::Equals" => {
            let xs = a.as_sequence().expect("Equals [a, b]");
            Value::Bool(str_of(&xs[0]) == str_of(&xs[1]))
        }
        "Fn::Not" => {
            let xs = a.as_sequence().expect("Not [c]");
            Value::Bool(!eval(&xs[0], s).as_bool().expect("Not of a bool"))
        }
        "Fn::And" | "Fn::Or" => {
            let xs = a.as_sequence().expect("And/Or [c, ...]");
            let bools: Vec<bool> = xs
                .iter()
                .map(|x| eval(x, s).as_bool().expect("And/Or of bools"))
                .collect();
            Value::Bool(if f == "Fn::And" {
                bools.iter().all(|b| *b)
            } else {
                bools.iter().any(|b| *b)
            })
        }
        other => panic!("intrinsic {other} is not evaluated by the tests"),
    }
}

/// `Fn::Sub`'s substitution: `${Name}` and `${Logical.Attr}` from `vars` then the stack;
/// `${!Literal}` is written as `${Literal}`.
pub fn sub(text: &str, vars: &BTreeMap<String, String>, s: &Stack) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').expect("unclosed ${ in Fn::Sub");
        let name = &after[..end];
        if let Some(lit) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(lit);
            out.push('}');
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        } else {
            out.push_str(&scalar(&s.get(name)));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The conditions of a template, evaluated for the stack's values.
pub fn conditions(t: &Template, s: &Stack) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    if let Some(c) = t.doc.get("Conditions").and_then(Value::as_mapping) {
        for (k, v) in c {
            out.insert(
                scalar(k),
                eval(v, s).as_bool().expect("a condition is a bool"),
            );
        }
    }
    out
}

/// Writes `text` to a temporary file and runs shellcheck on it: None when clean, else its
/// report.
pub fn shellcheck(name: &str, text: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let o = std::process::Command::new("shellcheck")
        .arg(&path)
        .output()
        .expect("shellcheck (apt-get install shellcheck; scripts/install-deps does)");
    (!o.status.success()).then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The `Fn::ForEach::` loops of a template expanded for the stack's list values (only what the
/// templates use: one identifier, `&{Id}` in the logical id, `!Ref Id` inside).
pub fn expand_foreach(t: &Template, s: &Stack) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (k, v) in t.resources() {
        if !k.starts_with("Fn::ForEach::") {
            continue;
        }
        let xs = v.as_sequence().expect("ForEach [id, list, body]");
        let id = scalar(&xs[0]);
        let list = eval(&xs[1], s);
        let body = xs[2].as_mapping().expect("ForEach body");
        for item in list.as_sequence().expect("ForEach list") {
            let item = scalar(item);
            let mut s2 = s.clone();
            s2.set(&id, &item);
            for (lk, lv) in body {
                let clean: String = item.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
                let logical = scalar(lk).replace(&format!("&{{{id}}}"), &clean);
                out.insert(logical, eval(lv, &s2));
            }
        }
    }
    out
}
