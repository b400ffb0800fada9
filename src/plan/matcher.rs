//! Path templates of `match.path` (SPEC §2.2): literal segments match exactly, `{name}` captures
//! one non-empty segment, a final `{name*}` captures the rest. The query string is not part of
//! the match and a trailing slash is not significant.

use crate::encoding::percent_decode;

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    Capture,
}

/// A compiled `match.path`: `/api/products/{id}`, `/files/{rest*}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<PatternSegment>,
    has_rest: bool,
    capture_names: Vec<String>,
}

/// A captured value, percent-decoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// A `{name}` capture: one segment.
    Segment(String),
    /// A `{name*}` capture: its segments, each decoded on its own.
    Rest(Vec<String>),
    /// The decoded bytes are not UTF-8: the value cannot be used.
    Invalid,
}

impl PathPattern {
    /// Compiles a `match.path`: it starts with `/`, has no query, fragment or whitespace, no
    /// empty segment; captures are whole segments named with letters, digits, `_` and `-`,
    /// each name once, and a `{name*}` comes last. The error is the reason only.
    pub fn parse(template: &str) -> Result<PathPattern, String> {
        let Some(body) = template.strip_prefix('/') else {
            return Err("must start with \"/\"".to_string());
        };
        if template.contains(['?', '#']) || template.chars().any(|c| c.is_whitespace()) {
            return Err("must be a path only (no query, fragment or whitespace)".to_string());
        }
        let mut pattern = PathPattern {
            text: template.to_string(),
            segments: Vec::new(),
            has_rest: false,
            capture_names: Vec::new(),
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Ok(pattern);
        }
        for segment in body.split('/') {
            if pattern.has_rest {
                return Err("a {name*} capture must be the last segment".to_string());
            }
            let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                if segment.contains(['{', '}']) {
                    return Err(format!(
                        "segment \"{segment}\": a capture must be a whole segment like {{id}}"
                    ));
                }
                if segment.is_empty() {
                    return Err("empty segment (\"//\")".to_string());
                }
                pattern
                    .segments
                    .push(PatternSegment::Literal(segment.to_string()));
                continue;
            };
            let (name, rest) = match inner.strip_suffix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if !is_capture_name(name) {
                return Err(format!(
                    "capture \"{{{inner}}}\": names use letters, digits, '_' and '-'"
                ));
            }
            if pattern.capture_names.iter().any(|n| n == name) {
                return Err(format!("capture \"{name}\" appears twice"));
            }
            pattern.capture_names.push(name.to_string());
            if rest {
                pattern.has_rest = true;
            } else {
                pattern.segments.push(PatternSegment::Capture);
            }
        }
        Ok(pattern)
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first segment, when it is a literal: every matching path starts with it.
    pub fn leading_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(PatternSegment::Literal(literal)) => Some(literal),
            _ => None,
        }
    }

    /// The captures' names, in the pattern's order (templates read them as `path.<name>`).
    pub fn capture_names(&self) -> &[String] {
        &self.capture_names
    }

    /// Matches a request path (query string already removed). Captures come back in the
    /// order of `capture_names`.
    pub fn matches(&self, path: &str) -> Option<Vec<Capture>> {
        let body = path.strip_prefix('/')?;
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut actual = body.split('/').filter(|_| !body.is_empty());
        let mut captures = Vec::with_capacity(self.capture_names.len());
        for expected in &self.segments {
            let segment = actual.next()?;
            match expected {
                PatternSegment::Literal(literal) => {
                    if literal != segment {
                        return None;
                    }
                }
                PatternSegment::Capture => {
                    if segment.is_empty() {
                        return None;
                    }
                    captures.push(decode_capture(segment));
                }
            }
        }
        if self.has_rest {
            let rest: Vec<&str> = actual.collect();
            if rest.is_empty() || rest.iter().all(|s| s.is_empty()) {
                return None;
            }
            let decoded: Option<Vec<String>> =
                rest.iter().map(|s| percent_decode(s, false)).collect();
            captures.push(decoded.map_or(Capture::Invalid, Capture::Rest));
        } else if actual.next().is_some() {
            return None;
        }
        Some(captures)
    }
}

fn decode_capture(segment: &str) -> Capture {
    percent_decode(segment, false).map_or(Capture::Invalid, Capture::Segment)
}

fn is_capture_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> Capture {
        Capture::Segment(s.to_string())
    }

    #[test]
    fn literal_and_capture_segments() {
        let p = PathPattern::parse("/api/products/{id}").unwrap();
        assert_eq!(p.capture_names(), ["id"]);
        assert_eq!(p.matches("/api/products/42"), Some(vec![seg("42")]));
        assert_eq!(p.matches("/api/products/42/"), Some(vec![seg("42")]));
        assert_eq!(p.matches("/api/products/"), None);
        assert_eq!(p.matches("/api/products"), None);
        assert_eq!(p.matches("/api/products/42/x"), None);
        assert_eq!(p.matches("/api/Products/42"), None);
        assert_eq!(p.matches("api/products/42"), None);
    }

    #[test]
    fn captures_are_decoded_once() {
        let p = PathPattern::parse("/u/{name}").unwrap();
        assert_eq!(p.matches("/u/a%2Fb"), Some(vec![seg("a/b")]));
        assert_eq!(p.matches("/u/%252F"), Some(vec![seg("%2F")]));
        assert_eq!(p.matches("/u/%ff"), Some(vec![Capture::Invalid]));
    }

    #[test]
    fn rest_capture_takes_one_or_more_segments() {
        let p = PathPattern::parse("/files/{path*}").unwrap();
        let rest = |v: &[&str]| {
            Some(vec![Capture::Rest(
                v.iter().map(|s| s.to_string()).collect(),
            )])
        };
        assert_eq!(p.matches("/files/a"), rest(&["a"]));
        assert_eq!(p.matches("/files/a/b%20c/d"), rest(&["a", "b c", "d"]));
        assert_eq!(p.matches("/files/"), None);
        assert_eq!(p.matches("/files"), None);
    }

    #[test]
    fn root_and_trailing_slash_patterns() {
        let p = PathPattern::parse("/").unwrap();
        assert_eq!(p.matches("/"), Some(vec![]));
        assert_eq!(p.matches("/x"), None);
        let p = PathPattern::parse("/health/").unwrap();
        assert_eq!(p.matches("/health"), Some(vec![]));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "api",
            "/a/{id}/{id}",
            "/a/{rest*}/b",
            "/a/x{id}",
            "/a/{}",
            "/a?x=1",
            "/a//b",
            "/a/{bad name}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
