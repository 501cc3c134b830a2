//! The rule that says how configured bouncers combine, e.g. `all(token, any(country,
//! network))`: a small recursive-descent parser over the bouncers' names.

use super::Bouncer;

/// Builds the bouncer a rule names, such as `all(token, any(country, network))`, from the
/// bouncers configured by name (`token`, `country`, `network`, `window`, `password`).
pub fn compose(
    rule: &str,
    named: &std::collections::BTreeMap<&str, Bouncer>,
) -> Result<Bouncer, String> {
    let mut parser = RuleParser {
        text: rule,
        rest: rule,
        named,
    };
    let bouncer = parser.expression()?;
    parser.skip_space();
    if !parser.rest.is_empty() {
        return Err(parser.error("the rule goes on after its end"));
    }
    Ok(bouncer)
}

struct RuleParser<'a, 'b> {
    text: &'a str,
    rest: &'a str,
    named: &'b std::collections::BTreeMap<&'b str, Bouncer>,
}

impl RuleParser<'_, '_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn error(&self, what: &str) -> String {
        let at = self.text.len() - self.rest.len();
        format!(
            "bouncer rule {:?}, at character {}: {what}",
            self.text,
            at + 1
        )
    }

    fn expression(&mut self) -> Result<Bouncer, String> {
        self.skip_space();
        let length = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        if length == 0 {
            return Err(self.error("expected a bouncer's name, all(…) or any(…)"));
        }
        let name = &self.rest[..length];
        self.rest = &self.rest[length..];
        self.skip_space();
        match name {
            "all" | "any" => {
                self.rest = self
                    .rest
                    .strip_prefix('(')
                    .ok_or_else(|| self.error("expected ( after all or any"))?;
                let mut parts = vec![self.expression()?];
                loop {
                    self.skip_space();
                    if let Some(rest) = self.rest.strip_prefix(',') {
                        self.rest = rest;
                        parts.push(self.expression()?);
                    } else if let Some(rest) = self.rest.strip_prefix(')') {
                        self.rest = rest;
                        break;
                    } else {
                        return Err(self.error("expected , or )"));
                    }
                }
                Ok(if name == "all" {
                    Bouncer::All(parts)
                } else {
                    Bouncer::Any(parts)
                })
            }
            name => self.named.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.named.keys().copied().collect();
                format!(
                    "bouncer rule {:?}: {name} is not configured (configured: {})",
                    self.text,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bouncer::{Verdict, Visitor};
    use std::collections::BTreeMap;

    #[test]
    fn rules_compose_configured_bouncers() {
        let mut named = BTreeMap::new();
        named.insert(
            "network",
            Bouncer::Network {
                allow: vec!["10.0.0.0/8".parse().unwrap()],
                deny: Vec::new(),
            },
        );
        named.insert(
            "window",
            Bouncer::Window {
                from: None,
                until: Some(5),
            },
        );
        let rule = compose("any( network , all(window))", &named).unwrap();
        assert!(matches!(&rule, Bouncer::Any(parts) if parts.len() == 2));
        let visitor = Visitor {
            path: "/live/a",
            keycard: None,
            client: "10.1.1.1".parse().unwrap(),
            basic: None,
            now: 100,
        };
        assert!(matches!(rule.judge(&visitor), Verdict::Allow { .. }));
        assert!(
            compose("all(network, token)", &named)
                .unwrap_err()
                .contains("token is not configured")
        );
        assert!(
            compose("all(network", &named)
                .unwrap_err()
                .contains("expected , or )")
        );
        assert!(
            compose("network window", &named)
                .unwrap_err()
                .contains("goes on")
        );
        assert!(
            compose("", &named)
                .unwrap_err()
                .contains("expected a bouncer")
        );
    }
}
