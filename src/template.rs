//! A body template (minijinja, Jinja2 syntax), compiled once from its source
//! text. The config compiles it while loading, so a template that loads is
//! one the renderer can use as is; rendering never compiles again.
//!
//! Besides minijinja's builtins a template has a `tojson` filter that
//! JSON-encodes a value (`{"text": {{ title|tojson }}}`), so strings are
//! embedded in a JSON body safely.

use std::fmt;
use std::sync::Arc;

use minijinja::Environment;
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
        let mut env = Environment::new();
        env.add_filter("tojson", tojson);
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
    fn syntax_errors_fail_to_compile_and_render_errors_are_errors() {
        assert!(Template::compile("{{ title ").is_err());
        let t = Template::compile("{{ n + 1 }}").unwrap();
        assert!(t.render(json!({"n": "text"})).is_err());
    }
}
