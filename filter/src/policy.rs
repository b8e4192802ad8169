//! Decides which scopes a request needs, per backend, method, tool and resource.

use crate::config::BackendConfig;
use crate::verdict::Refusal;

/// What a request asks of a backend, as read from the checked envelope.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The JSON-RPC method, or the HTTP method for GET/DELETE (legacy streams and session end).
    pub method: &'a str,
    /// `params.name` / `params.uri` / `params.taskId`, when the method has one.
    pub name: Option<&'a str>,
}

/// The scopes `ask` needs on `backend`, or a refusal when the target is not allowed at all.
pub fn required<'c>(backend: &'c BackendConfig, ask: Ask<'_>) -> Result<Vec<&'c str>, Refusal> {
    let mut needed: Vec<&str> = backend.methods.get(ask.method).map(|s| s.iter().map(String::as_str).collect()).unwrap_or_default();
    match (ask.method, ask.name) {
        ("tools/call", Some(tool)) => match backend.tools.get(tool) {
            Some(scopes) => needed.extend(scopes.iter().map(String::as_str)),
            // Fail closed: a tool the operator has not classified is not callable, unless the
            // backend opts in explicitly.
            None if backend.allow_unlisted_tools => {}
            // Not a scope problem: no scope would help, and the client's tool name must never
            // reach a response header.
            None => return Err(Refusal::ToolNotAllowed),
        },
        ("resources/read" | "resources/subscribe", Some(uri)) => {
            let rule = backend.resources.iter().filter(|r| uri.starts_with(r.prefix.as_str())).max_by_key(|r| r.prefix.len());
            if let Some(rule) = rule {
                needed.extend(rule.scopes.iter().map(String::as_str));
            }
        }
        _ => {}
    }
    needed.sort_unstable();
    needed.dedup();
    Ok(needed)
}

/// Refuses when `have` lacks any of `needed`; the refusal names exactly what is missing.
pub fn check(needed: &[&str], have: &[impl AsRef<str>]) -> Result<(), Refusal> {
    let missing: Vec<&str> = needed.iter().copied().filter(|n| !have.iter().any(|h| h.as_ref() == *n)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Refusal::InsufficientScope(missing.join(" ")))
    }
}

/// Confines a resource URI to approved workspace roots (no roots: not confined). A root matches
/// at a path boundary only, and URIs with dot segments or encoded separators are refused, since
/// the backend may resolve `file:///work/../etc` outside `file:///work/`.
pub fn check_workspace(roots: &[String], ask: Ask<'_>) -> Result<(), Refusal> {
    let (true, Some(uri)) = (matches!(ask.method, "resources/read" | "resources/subscribe"), ask.name) else {
        return Ok(());
    };
    if roots.is_empty() {
        return Ok(());
    }
    let lower = uri.to_ascii_lowercase();
    let sneaky = uri.split(['/', '\\']).any(|seg| seg == ".." || seg == ".") || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    let inside = roots.iter().any(|root| {
        uri == root.trim_end_matches('/') || uri.starts_with(&format!("{}/", root.trim_end_matches('/')))
    });
    if inside && !sneaky {
        Ok(())
    } else {
        Err(Refusal::WorkspaceDenied)
    }
}

/// The scopes of `have` that every one of `limits` also allows (`have ∩ limits…`, in `have`'s
/// order), borrowed from `have`.
pub fn narrowed<'a>(have: &'a [String], limits: &[&[String]]) -> Vec<&'a str> {
    have.iter().filter(|s| limits.iter().all(|l| l.contains(s))).map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BackendConfig {
        serde_json::from_str(
            r#"{"scopes":["files:read","files:write"],
                "methods":{"resources/list":["files:read"]},
                "tools":{"echo":[],"read_file":["files:read"],"write_file":["files:write"]},
                "resources":[{"prefix":"file:///","scopes":["files:read"]},{"prefix":"file:///secret/","scopes":["files:read","files:admin"]}]}"#,
        )
        .unwrap()
    }

    fn ask<'a>(method: &'a str, name: Option<&'a str>) -> Ask<'a> {
        Ask { method, name }
    }

    #[test]
    fn tool_scopes_are_required() {
        let b = files();
        assert_eq!(required(&b, ask("tools/call", Some("write_file"))).unwrap(), vec!["files:write"]);
        assert!(required(&b, ask("tools/call", Some("echo"))).unwrap().is_empty());
        let have = vec!["files:read".to_string()];
        assert_eq!(check(&["files:write"], &have), Err(Refusal::InsufficientScope("files:write".into())));
        assert!(check(&["files:read"], &have).is_ok());
    }

    #[test]
    fn unlisted_tool_is_refused_unless_allowed() {
        let mut b = files();
        assert_eq!(required(&b, ask("tools/call", Some("rm_rf"))), Err(Refusal::ToolNotAllowed));
        b.allow_unlisted_tools = true;
        assert!(required(&b, ask("tools/call", Some("rm_rf"))).unwrap().is_empty());
    }

    #[test]
    fn longest_resource_prefix_decides() {
        let b = files();
        assert_eq!(required(&b, ask("resources/read", Some("file:///a"))).unwrap(), vec!["files:read"]);
        assert_eq!(required(&b, ask("resources/read", Some("file:///secret/k"))).unwrap(), vec!["files:admin", "files:read"]);
        assert_eq!(required(&b, ask("resources/list", None)).unwrap(), vec!["files:read"]);
    }

    #[test]
    fn workspace_confines_resource_reads_at_path_boundaries() {
        let roots = vec!["file:///work/alice/".to_string()];
        let read = |uri| check_workspace(&roots, ask("resources/read", Some(uri)));
        assert!(read("file:///work/alice/notes.txt").is_ok());
        assert!(read("file:///work/alice").is_ok());
        for outside in ["file:///work/alicex/a", "file:///etc/passwd", "file:///work/alice/../bob/x", "file:///work/alice/%2e%2e/bob"] {
            assert_eq!(read(outside), Err(Refusal::WorkspaceDenied), "{outside}");
        }
        assert!(check_workspace(&[], ask("resources/read", Some("file:///etc/passwd"))).is_ok(), "no roots: not confined");
        assert!(check_workspace(&roots, ask("tools/call", Some("read_file"))).is_ok(), "tool arguments are the backend's to confine");
    }

    #[test]
    fn intersection_keeps_only_common_scopes() {
        let caller = vec!["files:read".to_string(), "reports:write".to_string(), "admin".to_string()];
        let backend = vec!["files:read".to_string(), "files:write".to_string()];
        assert_eq!(narrowed(&caller, &[&backend]), vec!["files:read"]);
        let delegation = vec!["reports:write".to_string(), "files:read".to_string()];
        assert_eq!(narrowed(&caller, &[&delegation, &backend]), vec!["files:read"]);
        assert!(narrowed(&caller, &[&delegation, &[]]).is_empty());
    }
}
