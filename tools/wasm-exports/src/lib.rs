//! Keeps only the proxy-wasm callbacks a module implements among its exports.
//!
//! The Rust proxy-wasm SDK exports every callback of the ABI, implemented or not, and Envoy
//! calls each exported callback at its event (a response body, the end of every stream): a call
//! into V8 costs about 3k instructions even when the SDK only gives its default answer. Envoy
//! skips a callback whose export is absent (proxy-wasm-cpp-host checks each one before calling
//! it) with the same answer the SDK's defaults give (continue; done), so removing the exports of
//! the callbacks a filter leaves at the SDK's default changes nothing but the cost.
//!
//! Only exports named `proxy_on_*` are touched; memory, `_initialize` and the ABI version
//! marker always stay. Function bodies stay too: the module's code is not rewritten, only the
//! names Envoy looks up.

use std::fmt;

/// Why a module could not be trimmed.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NotWasm,
    Truncated,
    /// A kept callback the module does not export: a misspelt list would otherwise drop a
    /// callback the filter relies on without a word.
    Missing(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotWasm => write!(f, "not a WebAssembly binary module (version 1)"),
            Error::Truncated => write!(f, "the module ends inside a section"),
            Error::Missing(name) => write!(f, "the list keeps {name}, which the module does not export"),
        }
    }
}

impl std::error::Error for Error {}

/// The callbacks a list names: one per line, `#` to the end of a line a comment. The filter's
/// test of its list against `lib.rs` reads it with this too, so both see the same names.
pub fn listed(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect()
}

const CALLBACK_PREFIX: &str = "proxy_on_";
const EXPORT_SECTION: u8 = 7;

/// The module with every `proxy_on_*` export not in `keep` removed, and the names removed.
pub fn trim(module: &[u8], keep: &[&str]) -> Result<(Vec<u8>, Vec<String>), Error> {
    if module.len() < 8 || module[..8] != *b"\0asm\x01\0\0\0" {
        return Err(Error::NotWasm);
    }
    let mut out = module[..8].to_vec();
    let mut removed = Vec::new();
    let mut exported = Vec::new();
    let mut at = 8;
    while at < module.len() {
        let id = module[at];
        let (size, body_at) = leb_u32(module, at + 1)?;
        let end = body_at.checked_add(size as usize).filter(|e| *e <= module.len()).ok_or(Error::Truncated)?;
        let body = &module[body_at..end];
        if id == EXPORT_SECTION {
            let (kept, names) = trim_exports(body, keep, &mut removed)?;
            exported = names;
            out.push(id);
            push_leb(&mut out, kept.len() as u32);
            out.extend_from_slice(&kept);
        } else {
            out.extend_from_slice(&module[at..end]);
        }
        at = end;
    }
    if let Some(missing) = keep.iter().find(|k| !exported.iter().any(|e| e == *k)) {
        return Err(Error::Missing(missing.to_string()));
    }
    Ok((out, removed))
}

/// The export section's body without the dropped callbacks, and every name it exported.
fn trim_exports(body: &[u8], keep: &[&str], removed: &mut Vec<String>) -> Result<(Vec<u8>, Vec<String>), Error> {
    let (count, mut at) = leb_u32(body, 0)?;
    let mut entries = Vec::new();
    let mut names = Vec::new();
    let mut kept = 0u32;
    for _ in 0..count {
        let start = at;
        let (len, name_at) = leb_u32(body, at)?;
        let name_end = name_at.checked_add(len as usize).filter(|e| *e < body.len()).ok_or(Error::Truncated)?;
        let name = String::from_utf8_lossy(&body[name_at..name_end]).into_owned();
        // The export's kind (one byte) and its index.
        let (_, end) = leb_u32(body, name_end + 1)?;
        at = end;
        if name.starts_with(CALLBACK_PREFIX) && !keep.contains(&name.as_str()) {
            removed.push(name.clone());
        } else {
            entries.extend_from_slice(&body[start..end]);
            kept += 1;
        }
        names.push(name);
    }
    let mut section = Vec::new();
    push_leb(&mut section, kept);
    section.extend_from_slice(&entries);
    Ok((section, names))
}

fn leb_u32(bytes: &[u8], mut at: usize) -> Result<(u32, usize), Error> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at).ok_or(Error::Truncated)?;
        at += 1;
        value |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
    }
    Err(Error::Truncated)
}

fn push_leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of one type and one function (section 3 of `function_count` entries would be
    /// longer; the trim never reads it), exporting `names` all as function 0.
    fn module(names: &[&str]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
        m.extend_from_slice(&[3, 2, 1, 0]); // function section: one function of type 0
        let mut exports = Vec::new();
        push_leb(&mut exports, names.len() as u32);
        for name in names {
            push_leb(&mut exports, name.len() as u32);
            exports.extend_from_slice(name.as_bytes());
            exports.extend_from_slice(&[0, 0]);
        }
        m.push(EXPORT_SECTION);
        push_leb(&mut m, exports.len() as u32);
        m.extend_from_slice(&exports);
        m.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]); // code section: an empty body
        m
    }

    #[test]
    fn drops_only_unlisted_callbacks() {
        let all = ["memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_log", "proxy_on_done", "proxy_on_response_body"];
        let (out, removed) = trim(&module(&all), &["proxy_on_log"]).unwrap();
        assert_eq!(out, module(&["memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_log"]));
        assert_eq!(removed, ["proxy_on_done", "proxy_on_response_body"]);
    }

    #[test]
    fn a_trimmed_module_trims_to_itself() {
        let (once, _) = trim(&module(&["memory", "proxy_on_log", "proxy_on_done"]), &["proxy_on_log"]).unwrap();
        let (twice, removed) = trim(&once, &["proxy_on_log"]).unwrap();
        assert_eq!(once, twice);
        assert!(removed.is_empty());
    }

    #[test]
    fn a_kept_callback_the_module_lacks_is_an_error() {
        let err = trim(&module(&["proxy_on_log"]), &["proxy_on_log", "proxy_on_tick"]).unwrap_err();
        assert_eq!(err, Error::Missing("proxy_on_tick".into()));
        assert!(err.to_string().contains("proxy_on_tick"));
    }

    #[test]
    fn lists_skip_comments_and_blank_lines() {
        assert_eq!(listed("# head\n\nproxy_on_log  # why\n  proxy_on_tick\n#proxy_on_done\n"), ["proxy_on_log", "proxy_on_tick"]);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(trim(b"\0asm\x02\0\0\0", &[]), Err(Error::NotWasm));
        let mut cut = module(&["proxy_on_log"]);
        cut.truncate(cut.len() - 3);
        assert_eq!(trim(&cut, &[]), Err(Error::Truncated));
    }

    #[test]
    fn long_sections_keep_multibyte_sizes() {
        let names: Vec<String> = (0..40).map(|i| format!("proxy_on_callback_number_{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (out, removed) = trim(&module(&refs), &refs[..30]).unwrap();
        assert_eq!(out, module(&refs[..30]));
        assert_eq!(removed.len(), 10);
    }
}
