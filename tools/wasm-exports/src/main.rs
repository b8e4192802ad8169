//! wasm-exports MODULE CALLBACKS: rewrites MODULE in place with only the `proxy_on_*` exports
//! named in the file CALLBACKS (one per line, `#` comments), and says which it removed.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, callbacks] = args.as_slice() else {
        eprintln!("usage: wasm-exports MODULE CALLBACKS");
        return ExitCode::from(2);
    };
    match run(module, callbacks) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-exports: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(module: &str, callbacks: &str) -> Result<(), String> {
    let list = std::fs::read_to_string(callbacks).map_err(|e| format!("{callbacks}: {e}"))?;
    let keep = wasm_exports::listed(&list);
    let bytes = std::fs::read(module).map_err(|e| format!("{module}: {e}"))?;
    let (trimmed, removed) = wasm_exports::trim(&bytes, &keep).map_err(|e| format!("{module}: {e}"))?;
    if removed.is_empty() {
        return Ok(());
    }
    // A new file renamed over the old: cargo hard-links its output, and the copy in deps/ stays
    // as the linker wrote it.
    let tmp = format!("{module}.trim");
    std::fs::write(&tmp, &trimmed).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, module).map_err(|e| format!("{module}: {e}"))?;
    eprintln!("wasm-exports: {module}: {} callbacks left to Envoy's default: {}", removed.len(), removed.join(" "));
    Ok(())
}
