//! A body template (minijinja, Jinja2 syntax), compiled once from its source
//! text. The config compiles it while loading, so a template that loads is
//! one the renderer can use as is; rendering never compiles again.
//!
//! Besides minijinja's builtins a template has a `tojson` filter that
//! JSON-encodes a value (`{"text": {{ title|tojson }}}`), so strings are
//! embedded in a JSON body safely.

use std::fmt;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

const NAME: &str = "body";

/// A compiled template; cheap to clone.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
}

/// A template that does not compile, or fails while rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl Template {
    /// Compile `source`.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        Self::build(source, UndefinedBehavior::Lenient)
    }

    /// Compile `source`; rendering it with a variable the context does not
    /// have is an error rather than an empty string (action bodies: a
    /// misspelt `{{ agnet }}` is caught when the config loads).
    pub fn compile_strict(source: &str) -> Result<Self, TemplateError> {
        Self::build(source, UndefinedBehavior::Strict)
    }

    fn build(source: &str, undefined: UndefinedBehavior) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(undefined);
        if undefined == UndefinedBehavior::Strict {
            env.add_filter("tojson", tojson_defined);
        } else {
            env.add_filter("tojson", tojson);
        }
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| TemplateError(e.to_string()))?;
        Ok(Self {
            env: Arc::new(env),
            source: source.into(),
        })
    }

    /// Render with `ctx` as the template's variables.
    pub fn render<S: Serialize>(&self, ctx: S) -> Result<String, TemplateError> {
        self.env
            .get_template(NAME)
            .and_then(|t| t.render(ctx))
            .map_err(|e| TemplateError(e.to_string()))
    }

    /// The variables the template reads that it does not set itself
    /// (top-level names: `agent`, `labels`), sorted.
    pub fn variables(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .env
            .get_template(NAME)
            .map(|t| t.undeclared_variables(false).into_iter().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The source text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source()).finish()
    }
}

/// `tojson` of a strict template: an undefined value (`labels.team` of an
/// agent without that label) is an error, not `null`.
fn tojson_defined(v: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson of an undefined value",
        ));
    }
    tojson(v)
}

fn tojson(v: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    serde_json::to_string(&v)
        .map(minijinja::Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_once_and_renders_with_tojson() {
        let t = Template::compile(r#"{"text": {{ title|tojson }}}"#).unwrap();
        let out = t
            .render(json!({"title": "a \"quoted\" <&> title"}))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "a \"quoted\" <&> title");
        assert_eq!(t.source(), r#"{"text": {{ title|tojson }}}"#);
    }

    #[test]
    fn strict_templates_refuse_unknown_variables() {
        let lenient = Template::compile("{{ agnet }}").unwrap();
        assert_eq!(lenient.render(json!({"agent": "a"})).unwrap(), "");
        let strict = Template::compile_strict("{{ agnet }}").unwrap();
        assert!(strict.render(json!({"agent": "a"})).is_err());
        let strict = Template::compile_strict("{{ agent|tojson }}").unwrap();
        assert_eq!(strict.render(json!({"agent": "a"})).unwrap(), "\"a\"");
        let strict = Template::compile_strict("{{ labels.team|tojson }}").unwrap();
        assert!(strict.render(json!({"labels": {}})).is_err());
        let t = Template::compile_strict("{% set x = 1 %}{{ agnet|tojson }}{{ labels.a }}{{ x }}")
            .unwrap();
        assert_eq!(t.variables(), vec!["agnet", "labels"]);
    }

    #[test]
    fn syntax_errors_fail_to_compile_and_render_errors_are_errors() {
        assert!(Template::compile("{{ title ").is_err());
        let t = Template::compile("{{ n + 1 }}").unwrap();
        assert!(t.render(json!({"n": "text"})).is_err());
    }
}
