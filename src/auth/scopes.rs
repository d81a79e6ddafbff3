//! Scopes, scope sets and scope expressions, with Taskcluster's exact satisfaction rules.
//!
//! Every authorization decision of the API ends here: an endpoint declares a scope expression
//! template (`queue:create-task:<taskQueueId>`), the handler fills in the parameters, and the
//! caller's expanded scopes must satisfy it. The rules are Taskcluster's (`taskcluster-lib-scopes`):
//!
//! - a scope is printable ASCII (0x20–0x7e);
//! - an owned scope satisfies a required one when they are equal, or when the owned scope ends in
//!   `*` and the required one starts with everything before that final `*`. A `*` anywhere else
//!   is a literal character, so `a*b` only satisfies `a*b`, and `a**` satisfies what starts with
//!   `a*`;
//! - an expression is a scope, `{"AllOf": [..]}` or `{"AnyOf": [..]}`; an empty `AllOf` is always
//!   satisfied and an empty `AnyOf` never is.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Whether `scope` is a valid scope: printable ASCII, possibly empty.
pub fn is_valid_scope(scope: &str) -> bool {
    scope.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
}

/// Whether `scope` may be granted to a client, a role or a task. Taskcluster refuses scopes
/// ending in `**` there: such a scope reads like "everything" but only matches a literal `*`.
pub fn is_grantable_scope(scope: &str) -> bool {
    is_valid_scope(scope) && !scope.ends_with("**")
}

/// Whether the owned scope `owned` satisfies the required scope `required`.
pub fn satisfies(owned: &str, required: &str) -> bool {
    if owned == required {
        return true;
    }
    match owned.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => false,
    }
}

/// Taskcluster's scope order: plain byte order, except that a final `*` sorts before the end of
/// the string, so `P*` comes right before `P`, which comes before every other `P…`. In that
/// order everything a star scope satisfies follows it directly, which makes normalizing a sorted
/// list a single pass.
pub fn scope_compare(a: &str, b: &str) -> Ordering {
    let (a_stem, a_star) = match a.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (a, false),
    };
    let (b_stem, b_star) = match b.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (b, false),
    };
    a_stem.cmp(b_stem).then(b_star.cmp(&a_star))
}

/// A normalized set of scopes: sorted with [`scope_compare`], without duplicates and without
/// scopes that another scope of the set already satisfies. Owning `["q:*", "q:1"]` is the same
/// as owning `["q:*"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(Vec<String>);

impl ScopeSet {
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        scopes.sort_by(|a, b| scope_compare(a, b));
        scopes.dedup();
        let mut normalized: Vec<String> = Vec::with_capacity(scopes.len());
        let mut covering_prefix: Option<String> = None;
        for scope in scopes {
            if let Some(prefix) = &covering_prefix
                && scope.starts_with(prefix.as_str())
            {
                continue;
            }
            covering_prefix = scope.strip_suffix('*').map(str::to_owned);
            normalized.push(scope);
        }
        ScopeSet(normalized)
    }

    pub fn empty() -> Self {
        ScopeSet(Vec::new())
    }

    /// The union of both sets, normalized.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet::new(self.0.iter().chain(other.0.iter()).cloned())
    }

    /// Whether some scope of the set satisfies `required`.
    pub fn satisfies_scope(&self, required: &str) -> bool {
        self.0.iter().any(|owned| satisfies(owned, required))
    }

    /// Whether the set satisfies every scope of `required` (Taskcluster's `{AllOf: required}`).
    pub fn satisfies_all<S: AsRef<str>>(&self, required: &[S]) -> bool {
        required
            .iter()
            .all(|scope| self.satisfies_scope(scope.as_ref()))
    }

    pub fn satisfies(&self, expression: &ScopeExpression) -> bool {
        match expression {
            ScopeExpression::Scope(scope) => self.satisfies_scope(scope),
            ScopeExpression::AllOf(parts) => parts.iter().all(|part| self.satisfies(part)),
            ScopeExpression::AnyOf(parts) => parts.iter().any(|part| self.satisfies(part)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl<S: Into<String>> FromIterator<S> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        ScopeSet::new(iter)
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A scope expression: what an endpoint requires. Also used as a *template*, whose scopes may
/// hold `<name>` parameters (see [`ScopeExpression::render`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScopeExpression {
    Scope(String),
    AllOf(Vec<ScopeExpression>),
    AnyOf(Vec<ScopeExpression>),
}

/// Why a JSON value is not a scope expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope expression: {reason}")]
pub struct InvalidExpression {
    reason: String,
}

/// Why a scope expression template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope expression template needs parameter `{name}`, which was not given")]
pub struct MissingParameter {
    pub name: String,
}

impl ScopeExpression {
    pub fn scope(scope: impl Into<String>) -> Self {
        ScopeExpression::Scope(scope.into())
    }

    pub fn all_of<I, E>(parts: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<ScopeExpression>,
    {
        ScopeExpression::AllOf(parts.into_iter().map(Into::into).collect())
    }

    pub fn any_of<I, E>(parts: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<ScopeExpression>,
    {
        ScopeExpression::AnyOf(parts.into_iter().map(Into::into).collect())
    }

    /// Parses Taskcluster's JSON form: a string, or an object with exactly one key, `AllOf` or
    /// `AnyOf`, holding an array of expressions. Every scope must be valid.
    pub fn from_json(value: &Value) -> Result<Self, InvalidExpression> {
        let invalid = |reason: String| InvalidExpression { reason };
        match value {
            Value::String(scope) if is_valid_scope(scope) => Ok(ScopeExpression::scope(scope)),
            Value::String(scope) => Err(invalid(format!(
                "`{}` is not a valid scope (printable ASCII only)",
                scope.escape_debug()
            ))),
            Value::Object(object) if object.len() == 1 => {
                let Some((key, parts)) = object.iter().next() else {
                    return Err(invalid("empty object".to_owned()));
                };
                let Value::Array(parts) = parts else {
                    return Err(invalid(format!("`{key}` must hold an array")));
                };
                let parts = parts
                    .iter()
                    .map(ScopeExpression::from_json)
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "AllOf" => Ok(ScopeExpression::AllOf(parts)),
                    "AnyOf" => Ok(ScopeExpression::AnyOf(parts)),
                    other => Err(invalid(format!(
                        "unknown key `{}`, expected `AllOf` or `AnyOf`",
                        other.escape_debug()
                    ))),
                }
            }
            _ => Err(invalid(
                "expected a scope or an object with one key, `AllOf` or `AnyOf`".to_owned(),
            )),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            ScopeExpression::Scope(scope) => Value::String(scope.clone()),
            ScopeExpression::AllOf(parts) => serde_json::json!({
                "AllOf": parts.iter().map(ScopeExpression::to_json).collect::<Vec<_>>()
            }),
            ScopeExpression::AnyOf(parts) => serde_json::json!({
                "AnyOf": parts.iter().map(ScopeExpression::to_json).collect::<Vec<_>>()
            }),
        }
    }

    /// Fills every `<name>` (a letter, then letters, digits or `_`, as Taskcluster's templates)
    /// with the parameter of that name. Other `<…>` text, such as a role's `<..>`, stays as it is.
    /// A missing parameter is an error rather than Taskcluster's silent empty string: it can only
    /// come from a handler that forgot one.
    pub fn render(&self, params: &[(&str, &str)]) -> Result<ScopeExpression, MissingParameter> {
        Ok(match self {
            ScopeExpression::Scope(template) => {
                ScopeExpression::Scope(render_scope(template, params)?)
            }
            ScopeExpression::AllOf(parts) => ScopeExpression::AllOf(
                parts
                    .iter()
                    .map(|part| part.render(params))
                    .collect::<Result<_, _>>()?,
            ),
            ScopeExpression::AnyOf(parts) => ScopeExpression::AnyOf(
                parts
                    .iter()
                    .map(|part| part.render(params))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The part of the expression that `scopes` does not satisfy, simplified as Taskcluster's
    /// `removeGivenScopes` does: satisfied scopes drop out, an `AllOf` keeps its unsatisfied
    /// members, an `AnyOf` with any satisfied member disappears, and one-member lists collapse
    /// to that member. `None` when the expression is satisfied.
    pub fn unsatisfied(&self, scopes: &ScopeSet) -> Option<ScopeExpression> {
        match self {
            ScopeExpression::Scope(scope) => (!scopes.satisfies_scope(scope)).then(|| self.clone()),
            ScopeExpression::AllOf(parts) => {
                let mut missing: Vec<ScopeExpression> = parts
                    .iter()
                    .filter_map(|part| part.unsatisfied(scopes))
                    .collect();
                match missing.len() {
                    0 => None,
                    1 => missing.pop(),
                    _ => Some(ScopeExpression::AllOf(missing)),
                }
            }
            ScopeExpression::AnyOf(parts) => {
                let mut missing = Vec::with_capacity(parts.len());
                for part in parts {
                    missing.push(part.unsatisfied(scopes)?);
                }
                if missing.len() == 1 {
                    missing.pop()
                } else {
                    Some(ScopeExpression::AnyOf(missing))
                }
            }
        }
    }
}

/// Renders one template scope; see [`ScopeExpression::render`].
fn render_scope(template: &str, params: &[(&str, &str)]) -> Result<String, MissingParameter> {
    let mut rendered = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('<') {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_length = parameter_name_length(after);
        if name_length > 0 && after[name_length..].starts_with('>') {
            let name = &after[..name_length];
            let value = params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
                .ok_or_else(|| MissingParameter {
                    name: name.to_owned(),
                })?;
            rendered.push_str(value);
            rest = &after[name_length + 1..];
        } else {
            rendered.push('<');
            rest = after;
        }
    }
    rendered.push_str(rest);
    Ok(rendered)
}

/// Length of the parameter name (`[a-zA-Z][a-zA-Z0-9_]*`) at the start of `text`, 0 if none.
fn parameter_name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return 0;
    }
    bytes
        .iter()
        .take_while(|byte| byte.is_ascii_alphanumeric() || **byte == b'_')
        .count()
}

impl From<&str> for ScopeExpression {
    fn from(scope: &str) -> Self {
        ScopeExpression::scope(scope)
    }
}

impl From<String> for ScopeExpression {
    fn from(scope: String) -> Self {
        ScopeExpression::Scope(scope)
    }
}

/// As Taskcluster prints expressions in error messages: a lone scope as itself, anything else as
/// JSON indented by two spaces (`JSON.stringify(expression, null, 2)`).
impl fmt::Display for ScopeExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeExpression::Scope(scope) => f.write_str(scope),
            _ => {
                let text = serde_json::to_string_pretty(&self.to_json()).map_err(|_| fmt::Error)?;
                f.write_str(&text)
            }
        }
    }
}

impl Serialize for ScopeExpression {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ScopeExpression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ScopeExpression::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn satisfaction_table() {
        // (owned, required, satisfied)
        let table = [
            ("a", "a", true),
            ("a", "ab", false),
            ("a*", "a", true),
            ("a*", "ab", true),
            ("a*", "abc:def*", true),
            ("a*", "b", false),
            ("ab*", "a", false),
            ("ab*", "a*", false),
            ("*", "", true),
            ("*", "anything at all", true),
            ("", "", true),
            ("", "a", false),
            // A star that is not final is a literal character.
            ("a*b", "a*b", true),
            ("a*b", "axb", false),
            ("a*b", "a*", false),
            // `**`: the first star is literal, the last one is the wildcard.
            ("a**", "a*", true),
            ("a**", "a*b", true),
            ("a**", "a", false),
            ("a**", "ab", false),
            // Only a final star of the *owned* scope is a wildcard.
            ("a", "a*", false),
            ("queue:create-task:*", "queue:create-task:proj/type", true),
            (
                "queue:create-task:proj/*",
                "queue:create-task:other/type",
                false,
            ),
            (
                "assume:repo:github.com/org/*",
                "assume:repo:github.com/org/repo",
                true,
            ),
        ];
        for (owned, required, expected) in table {
            assert_eq!(
                satisfies(owned, required),
                expected,
                "{owned:?} satisfies {required:?}"
            );
        }
    }

    #[test]
    fn valid_and_grantable_scopes() {
        assert!(is_valid_scope(""));
        assert!(is_valid_scope("queue:get-artifact:public/ x~*"));
        assert!(!is_valid_scope("tab\there"));
        assert!(!is_valid_scope("new\nline"));
        assert!(!is_valid_scope("ünïcode"));
        assert!(is_grantable_scope("a*"));
        assert!(!is_grantable_scope("a**"));
        assert!(!is_grantable_scope("**"));
    }

    #[test]
    fn sort_order_puts_star_scopes_first() {
        let mut scopes = vec!["b", "a(", "aa", "a", "a*", "", "*"];
        scopes.sort_by(|a, b| scope_compare(a, b));
        assert_eq!(scopes, ["*", "", "a*", "a", "a(", "aa", "b"]);
    }

    #[test]
    fn normalization_drops_duplicates_and_covered_scopes() {
        let set = ScopeSet::new(["ab", "a", "a*", "b", "b", "c:x", "c:*", "d*", "d"]);
        assert_eq!(set.as_slice(), ["a*", "b", "c:*", "d*"]);
        assert_eq!(ScopeSet::new(["x", "*", "y"]).as_slice(), ["*"]);
        assert_eq!(
            ScopeSet::new(["q:1", "q:2"]).union(&ScopeSet::new(["q:*"])),
            ScopeSet::new(["q:*"])
        );
        // The literal star of `a*b` does not cover `a*bc` … but the final one of `a*b*` does.
        assert_eq!(ScopeSet::new(["a*b", "a*bc"]).len(), 2);
        assert_eq!(ScopeSet::new(["a*b*", "a*bc"]).as_slice(), ["a*b*"]);
    }

    #[test]
    fn expressions_parse_print_and_evaluate() {
        let expression = ScopeExpression::from_json(&json!({
            "AnyOf": ["queue:create-task:proj/*", {"AllOf": ["a", "b"]}, {"AnyOf": []}]
        }))
        .unwrap();
        let scopes = ScopeSet::new(["a"]);
        assert!(!scopes.satisfies(&expression));
        assert!(ScopeSet::new(["a", "b"]).satisfies(&expression));
        assert!(ScopeSet::new(["queue:create-task:proj/*"]).satisfies(&expression));
        assert!(ScopeSet::new(["*"]).satisfies(&expression));
        assert!(ScopeSet::empty().satisfies(&ScopeExpression::AllOf(vec![])));
        assert!(!ScopeSet::new(["*"]).satisfies(&ScopeExpression::AnyOf(vec![])));
        assert_eq!(
            serde_json::to_value(&expression).unwrap(),
            json!({"AnyOf": ["queue:create-task:proj/*", {"AllOf": ["a", "b"]}, {"AnyOf": []}]})
        );
        assert_eq!(ScopeExpression::scope("a:b").to_string(), "a:b");
        assert_eq!(
            ScopeExpression::all_of(["a", "b"]).to_string(),
            "{\n  \"AllOf\": [\n    \"a\",\n    \"b\"\n  ]\n}"
        );
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            json!(5),
            json!(null),
            json!(["a"]),
            json!({}),
            json!({"AllOf": "a"}),
            json!({"AllOf": ["a"], "AnyOf": ["b"]}),
            json!({"OneOf": ["a"]}),
            json!({"AllOf": ["tab\there"]}),
            json!({"AllOf": [{"AnyOf": [7]}]}),
        ] {
            assert!(ScopeExpression::from_json(&bad).is_err(), "{bad} parsed");
        }
        assert!(serde_json::from_str::<ScopeExpression>("{\"AnyOf\": [1]}").is_err());
    }

    #[test]
    fn templates_render_parameters() {
        let template = ScopeExpression::all_of([
            "queue:create-artifact:<taskId>/<runId>",
            "assume:project:<..>/x",
            "a<b",
            "<not-a-name>",
        ]);
        let rendered = template
            .render(&[("taskId", "dSlITZ4yQgmvxxAi4A8fHQ"), ("runId", "0")])
            .unwrap();
        assert_eq!(
            rendered,
            ScopeExpression::all_of([
                "queue:create-artifact:dSlITZ4yQgmvxxAi4A8fHQ/0",
                "assume:project:<..>/x",
                "a<b",
                "<not-a-name>",
            ])
        );
        assert_eq!(
            ScopeExpression::scope("queue:claim-work:<taskQueueId>")
                .render(&[])
                .unwrap_err()
                .name,
            "taskQueueId"
        );
        // A parameter value is inserted as it is, never rendered again.
        assert_eq!(
            ScopeExpression::scope("x:<a>")
                .render(&[("a", "<b>"), ("b", "no")])
                .unwrap(),
            ScopeExpression::scope("x:<b>")
        );
    }

    #[test]
    fn unsatisfied_reports_what_is_missing() {
        let scopes = ScopeSet::new(["queue:get-task:*", "b"]);
        let all_of = ScopeExpression::all_of(["queue:get-task:x", "a", "c"]);
        assert_eq!(
            all_of.unsatisfied(&scopes),
            Some(ScopeExpression::all_of(["a", "c"]))
        );
        let single = ScopeExpression::all_of(["queue:get-task:x", "a"]);
        assert_eq!(
            single.unsatisfied(&scopes),
            Some(ScopeExpression::scope("a"))
        );
        let any_of = ScopeExpression::any_of(["a", "c"]);
        assert_eq!(any_of.unsatisfied(&scopes), Some(any_of.clone()));
        assert_eq!(
            ScopeExpression::any_of(["a", "b"]).unsatisfied(&scopes),
            None
        );
        let nested = ScopeExpression::AllOf(vec![
            ScopeExpression::any_of([
                ScopeExpression::scope("a"),
                ScopeExpression::all_of(["b", "c"]),
            ]),
            "queue:get-task:y".into(),
        ]);
        assert_eq!(
            nested.unsatisfied(&scopes),
            Some(ScopeExpression::any_of(["a", "c"]))
        );
        assert_eq!(
            ScopeExpression::AllOf(vec![]).unsatisfied(&ScopeSet::empty()),
            None
        );
        assert_eq!(
            ScopeExpression::AnyOf(vec![]).unsatisfied(&ScopeSet::new(["*"])),
            Some(ScopeExpression::AnyOf(vec![]))
        );
    }
}
