//! Where init's instructions go: `valgrind --tool=callgrind` on a bootstrap
//! with symbols (the `profiling` profile: `release` without the strip), from
//! exec to the first `/invocation/next`, against the bare runtime.
//! Instruction counts are repeatable whatever else the machine does.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cold::Subject;

/// One profiled init.
#[derive(Debug, Clone)]
pub struct Profiled {
    /// Instructions executed, exec to the first `/next` (and exit).
    pub instructions: u64,
}

/// Profiles `subject`'s init; the callgrind output and its inclusive
/// annotation go to `out_dir/<label>.{out,txt}`.
pub fn profile(subject: &Subject, out_dir: &Path) -> Result<Profiled, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let name = subject.label.replace(' ', "-");
    let out = out_dir.join(format!("{name}.out"));
    let wrapped = subject.under(
        "valgrind",
        &["--tool=callgrind".to_owned(), "--quiet".to_owned(), format!("--callgrind-out-file={}", out.display())],
    );
    let _ = wrapped.run_until_init(Duration::from_secs(300))?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let instructions = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{}: no totals", out.display()))?;
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=99"])
        .arg(&out)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let txt = out_dir.join(format!("{name}.txt"));
    std::fs::write(&txt, &annotated.stdout).map_err(|e| format!("{}: {e}", txt.display()))?;
    Ok(Profiled { instructions })
}
